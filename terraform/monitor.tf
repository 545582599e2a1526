data "exoscale_template" "monitor" {
  zone       = var.zone
  name       = var.monitor_template
  visibility = "private"
}

# Encrypts the secrets Grafana stores in its database (the contact points' webhook token). Grafana
# cannot read those secrets under another key, so this is generated once, kept in the state, and
# delivered to the monitor as a file; it never changes at a reboot.
resource "random_password" "grafana_secret_key" {
  length  = 40
  special = false
}

resource "exoscale_compute_instance" "monitor" {
  zone               = var.zone
  name               = "poolpilot-monitor"
  template_id        = data.exoscale_template.monitor.id
  type               = var.monitor_instance_type
  disk_size          = var.disk_size
  ssh_keys           = var.ssh_key_name == null ? [] : [var.ssh_key_name]
  security_group_ids = [exoscale_security_group.monitor.id]
  # Settings only: the image has everything installed.
  user_data = templatefile("${path.module}/userdata/monitor.yaml.tftpl", {
    zone                   = var.zone
    pool_id                = exoscale_instance_pool.app.id
    api_key                = exoscale_iam_api_key.autoscaler.key
    api_secret             = exoscale_iam_api_key.autoscaler.secret
    webhook_token          = var.webhook_token
    drain_token            = var.drain_token
    grafana_admin_password = var.grafana_admin_password
    grafana_secret_key     = random_password.grafana_secret_key.result
    pool_min               = var.pool_min
    pool_max               = var.pool_max
  })
}
