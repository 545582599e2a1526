locals {
  healthcheck = { interval = 10, timeout = 5, retries = 1 }
  # A drained member answers the health check with 503; the NLB stops sending to it after at
  # most interval x retries + timeout. The autoscaler waits that, plus 10 s for requests under
  # way (POOLPILOT_DRAIN_WAIT in the monitor's user-data), then until the NLB reports the member
  # failing, at most as long again, before it evicts the member.
  drain_wait_seconds = local.healthcheck.interval * local.healthcheck.retries + local.healthcheck.timeout + 10
}

# One NLB per zone (an NLB is zonal), in front of that zone's pool. With the front, the front
# is its only client: the pools admit the app port from the front's address (security.tf).
resource "exoscale_nlb" "app" {
  for_each = toset(local.app_zones)

  zone        = each.key
  name        = var.name_prefix
  description = "poolpilot: port 80 to the app of the pool in ${each.key}"
}

resource "exoscale_nlb_service" "http" {
  for_each = toset(local.app_zones)

  zone             = each.key
  nlb_id           = exoscale_nlb.app[each.key].id
  instance_pool_id = exoscale_instance_pool.app[each.key].id
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
