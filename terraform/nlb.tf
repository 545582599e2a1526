locals {
  healthcheck = { interval = 10, timeout = 5, retries = 1 }
  # A drained member answers the health check with 503; the NLB stops sending to it after at
  # most interval x retries + timeout. The autoscaler waits that, plus 10 s for requests under
  # way, before it evicts the member (POOLPILOT_DRAIN_WAIT in the monitor's user-data).
  drain_wait_seconds = local.healthcheck.interval * local.healthcheck.retries + local.healthcheck.timeout + 10
}

resource "exoscale_nlb" "app" {
  zone        = var.zone
  name        = var.name_prefix
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
    interval = local.healthcheck.interval
    timeout  = local.healthcheck.timeout
    retries  = local.healthcheck.retries
  }
}
