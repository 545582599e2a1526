resource "exoscale_nlb" "app" {
  zone        = var.zone
  name        = "poolpilot"
  description = "poolpilot: port 80 to the pool's app"
}

resource "exoscale_nlb_service" "http" {
  zone             = var.zone
  nlb_id           = exoscale_nlb.app.id
  instance_pool_id = exoscale_instance_pool.app.id
  name             = "http"
  description      = "port 80 to 8080 on every healthy member"
  protocol         = "tcp"
  port             = 80
  target_port      = 8080
  strategy         = "round-robin"

  healthcheck {
    mode     = "http"
    port     = 8080
    uri      = "/health"
    interval = 10
    timeout  = 5
    retries  = 1
  }
}
