module "userdata" {
  source = "./userdata"

  zone  = local.primary_zone
  pools = { for z, p in exoscale_instance_pool.app : z => p.id }
  kv = local.redis ? {
    primary  = exoscale_compute_instance.redis_primary[0].public_ip_address
    replicas = exoscale_nlb.kv["replicas"].ip_address
  } : null
  kv_pools                 = local.redis ? { replicas = exoscale_instance_pool.kv["replicas"].id, api = exoscale_instance_pool.kv["api"].id } : null
  front_backends           = { for z, n in exoscale_nlb.app : z => n.ip_address }
  elastic_ip               = local.front ? exoscale_elastic_ip.front[0].ip_address : null
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

# One monitor, in the first zone: one discovery agent and one autoscaler over every zone's pool
# (EXOSCALE_INSTANCEPOOL_ID lists them), Prometheus scraping every zone's members over their
# public addresses (security.tf admits the monitor's address on 8080 and 9100).
resource "exoscale_compute_instance" "monitor" {
  zone               = local.primary_zone
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
