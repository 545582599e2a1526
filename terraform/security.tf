# Pool members: the app port from anywhere (the NLB keeps the client's address and its health
# checks come from outside too, so Exoscale requires it open). That port also serves the app's
# /metrics (public information) and /admin/drain (which needs the drain token). node_exporter
# only from the monitor.
# The monitor: Grafana (password), Prometheus (password unless prometheus_auth = false) and SSH
# (keys only) from admin_cidrs. The autoscaler (8090), the discovery agent (9111) and
# Alertmanager (9093) listen on 127.0.0.1 and are not opened. Nothing else is open.

locals {
  admin_rules = merge(
    { for c in var.admin_cidrs : "pool-ssh-${c}" => { group = "pool", port = 22, cidr = c, what = "SSH" } },
    { for c in var.admin_cidrs : "monitor-ssh-${c}" => { group = "monitor", port = 22, cidr = c, what = "SSH" } },
    { for c in var.admin_cidrs : "monitor-grafana-${c}" => { group = "monitor", port = 3000, cidr = c, what = "Grafana" } },
    { for c in var.admin_cidrs : "monitor-prometheus-${c}" => { group = "monitor", port = 9090, cidr = c, what = "Prometheus" } },
  )
}

resource "exoscale_security_group" "pool" {
  name        = "${var.name_prefix}-pool"
  description = "poolpilot pool members"
}

resource "exoscale_security_group" "monitor" {
  name        = "${var.name_prefix}-monitor"
  description = "poolpilot monitor"
}

resource "exoscale_security_group_rule" "pool_app" {
  security_group_id = exoscale_security_group.pool.id
  description       = "the app, from clients and the NLB health checks"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = "0.0.0.0/0"
  start_port        = 8080
  end_port          = 8080
}

resource "exoscale_security_group_rule" "pool_node_exporter" {
  security_group_id      = exoscale_security_group.pool.id
  description            = "node_exporter, from the monitor only"
  type                   = "INGRESS"
  protocol               = "TCP"
  user_security_group_id = exoscale_security_group.monitor.id
  start_port             = 9100
  end_port               = 9100
}

resource "exoscale_security_group_rule" "admin" {
  for_each = local.admin_rules

  security_group_id = each.value.group == "pool" ? exoscale_security_group.pool.id : exoscale_security_group.monitor.id
  description       = "${each.value.what}, from admin_cidrs"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = each.value.cidr
  start_port        = each.value.port
  end_port          = each.value.port
}
