# Pool members: the app port from anywhere (the NLB keeps the client's address, and its health
# checks come from outside too), node_exporter and the app's metrics only from the monitor.
# The monitor: Grafana, Prometheus and SSH only from the admin CIDR. Nothing else is open.

resource "exoscale_security_group" "pool" {
  name        = "poolpilot-pool"
  description = "poolpilot pool members"
}

resource "exoscale_security_group" "monitor" {
  name        = "poolpilot-monitor"
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

resource "exoscale_security_group_rule" "pool_ssh" {
  security_group_id = exoscale_security_group.pool.id
  description       = "SSH, from the admin only"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = var.admin_cidr
  start_port        = 22
  end_port          = 22
}

resource "exoscale_security_group_rule" "monitor_grafana" {
  security_group_id = exoscale_security_group.monitor.id
  description       = "Grafana, from the admin only"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = var.admin_cidr
  start_port        = 3000
  end_port          = 3000
}

resource "exoscale_security_group_rule" "monitor_prometheus" {
  security_group_id = exoscale_security_group.monitor.id
  description       = "Prometheus, from the admin only"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = var.admin_cidr
  start_port        = 9090
  end_port          = 9090
}

resource "exoscale_security_group_rule" "monitor_ssh" {
  security_group_id = exoscale_security_group.monitor.id
  description       = "SSH, from the admin only"
  type              = "INGRESS"
  protocol          = "TCP"
  cidr              = var.admin_cidr
  start_port        = 22
  end_port          = 22
}
