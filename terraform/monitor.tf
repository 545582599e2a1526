module "userdata" {
  source = "./userdata"

  zone                     = var.zone
  pool_id                  = exoscale_instance_pool.app.id
  api_key                  = local.autoscaler_key
  api_secret               = local.autoscaler_secret
  webhook_token            = local.webhook_token
  drain_token              = local.drain_token
  pool_min                 = var.pool_min
  pool_max                 = var.pool_max
  drain_wait_seconds       = local.drain_wait_seconds
  grafana_admin_password   = local.grafana_admin_password
  grafana_secret_key       = random_password.grafana_secret_key.result
  prometheus_password      = local.prometheus_password
  prometheus_password_hash = var.prometheus_auth ? terraform_data.prometheus_password_hash.output : null
}

# cloud-init writes the user-data's files once, at the first boot: a monitor whose settings
# change must be replaced to see them. This digest is what replaces it.
resource "terraform_data" "monitor_settings" {
  input = sha256(module.userdata.monitor)
}

resource "exoscale_compute_instance" "monitor" {
  zone               = var.zone
  name               = "${var.name_prefix}-monitor"
  template_id        = data.exoscale_template.monitor.id
  type               = lower(var.monitor_instance_type)
  disk_size          = var.disk_size
  ssh_keys           = local.ssh_key_name == null ? [] : [local.ssh_key_name]
  security_group_ids = [exoscale_security_group.monitor.id]
  # Settings only: the image has everything installed.
  user_data = module.userdata.monitor

  lifecycle {
    replace_triggered_by = [terraform_data.monitor_settings]
  }
}
