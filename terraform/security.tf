# Security groups are global in Exoscale (no zone): one group per role serves every zone.
#
# Pool members: the app port (8080), which also serves the app's /metrics (public information)
# and /admin/drain (which needs the drain token), and node_exporter (9100).
# - Without the front (one zone, the course's deployment): the NLB is the entry point and keeps
#   the client's address, and its health checks come from outside too, so 8080 is open to the
#   world.
# - With the front: the front is the NLBs' only client, and an NLB keeps the client's address,
#   so 8080 admits the front's address, the monitor's (scrapes, drains) and Exoscale's NLB
#   health-check sources (the public group public-nlb-healthcheck-sources); nobody else.
# - 9100 from the monitor only.
# The monitor and the front are admitted by their public addresses, not their groups: their
# traffic to another zone's members crosses the Internet, and an address matches there too.
#
# The monitor: Grafana (password), Prometheus (password unless prometheus_auth = false) and SSH
# (keys only) from admin_cidrs. The autoscaler (8090), the discovery agent (9111) and
# Alertmanager (9093) listen on 127.0.0.1 and are not opened.
#
# The front: port 80 from the world, nothing else; SSH only from the admin_cidrs that are not
# the whole world (narrow admin_cidrs to your address to reach it). Its status page (9180)
# listens on 127.0.0.1. Nothing else is open anywhere.

locals {
  admin_rules = merge(
    { for c in var.admin_cidrs : "pool-ssh-${c}" => { group = "pool", port = 22, cidr = c, what = "SSH" } },
    { for c in var.admin_cidrs : "monitor-ssh-${c}" => { group = "monitor", port = 22, cidr = c, what = "SSH" } },
    { for c in var.admin_cidrs : "monitor-grafana-${c}" => { group = "monitor", port = 3000, cidr = c, what = "Grafana" } },
    { for c in var.admin_cidrs : "monitor-prometheus-${c}" => { group = "monitor", port = 9090, cidr = c, what = "Prometheus" } },
    { for c in var.admin_cidrs : "front-ssh-${c}" => { group = "front", port = 22, cidr = c, what = "SSH" } if local.front && c != "0.0.0.0/0" },
    # profile = "redis" (redis.tf): the primary, the replicas and the API members.
    merge([for g in keys(local.kv_groups) : { for c in var.admin_cidrs : "${g}-ssh-${c}" => { group = g, port = 22, cidr = c, what = "SSH" } }]...),
  )
  security_groups = merge(
    { pool = exoscale_security_group.pool.id, monitor = exoscale_security_group.monitor.id },
    local.front ? { front = exoscale_security_group.front[0].id } : {},
    local.kv_groups,
  )

  monitor_cidr = "${exoscale_compute_instance.monitor.public_ip_address}/32"
  # With the front, who may reach the pools' app port besides the NLB health checks.
  app_sources = local.front ? {
    front   = { cidr = "${exoscale_compute_instance.front[0].public_ip_address}/32", what = "the front (the NLBs' only client)" }
    monitor = { cidr = local.monitor_cidr, what = "the monitor (scrapes, drains)" }
  } : {}
}

resource "exoscale_security_group" "pool" {
  name        = "${var.name_prefix}-pool"
  description = "poolpilot pool members"
}

resource "exoscale_security_group" "monitor" {
  name        = "${var.name_prefix}-monitor"
  description = "poolpilot monitor"
}

resource "exoscale_security_group" "front" {
  count       = local.front ? 1 : 0
  name        = "${var.name_prefix}-front"
  description = "poolpilot front: port 80 only"
}

# Without the front: the app from anywhere (clients through the NLB, its health checks).
resource "exoscale_security_group_rule" "pool_app" {
  count             = local.front || local.redis ? 0 : 1
  security_group_id = exoscale_security_group.pool.id
  description       = "the app, from clients and the NLB health checks"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = "0.0.0.0/0"
  start_port        = 8080
  end_port          = 8080
}

# With the front: the app from the front and the monitor only...
resource "exoscale_security_group_rule" "pool_app_from" {
  for_each = local.app_sources

  security_group_id = exoscale_security_group.pool.id
  description       = "the app, from ${each.value.what}"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = each.value.cidr
  start_port        = 8080
  end_port          = 8080
}

# ...and from the NLBs' health checks.
resource "exoscale_security_group_rule" "pool_app_healthcheck" {
  count                 = local.front ? 1 : 0
  security_group_id     = exoscale_security_group.pool.id
  description           = "the app, from the NLB health checks"
  type                  = "INGRESS"
  protocol              = "TCP"
  public_security_group = "public-nlb-healthcheck-sources"
  start_port            = 8080
  end_port              = 8080
}

resource "exoscale_security_group_rule" "pool_node_exporter" {
  security_group_id = exoscale_security_group.pool.id
  description       = "node_exporter, from the monitor only"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = local.monitor_cidr
  start_port        = 9100
  end_port          = 9100
}

resource "exoscale_security_group_rule" "front_http" {
  count             = local.front ? 1 : 0
  security_group_id = exoscale_security_group.front[0].id
  description       = "the service, from the world"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = "0.0.0.0/0"
  start_port        = 80
  end_port          = 80
}

resource "exoscale_security_group_rule" "admin" {
  for_each = local.admin_rules

  security_group_id = local.security_groups[each.value.group]
  description       = "${each.value.what}, from admin_cidrs"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = each.value.cidr
  start_port        = each.value.port
  end_port          = each.value.port
}
