locals {
  # Hourly list prices in EUR (unofficial, from Exoscale's price list); disks and traffic are
  # billed separately and are not included.
  hourly_price = {
    "standard.micro"  = 0.00729
    "standard.tiny"   = 0.01458
    "standard.small"  = 0.02333
    "standard.medium" = 0.04666
    "standard.large"  = 0.09333
  }
  nlb_hourly_price = 0.03472
}

output "nlb_address" {
  description = "Send the load here: http://<nlb_address>/load"
  value       = exoscale_nlb.app.ip_address
}

output "grafana_url" {
  description = "Grafana (admin / grafana_admin_password), reachable from admin_cidr."
  value       = "http://${exoscale_compute_instance.monitor.public_ip_address}:3000"
}

output "prometheus_url" {
  description = "Prometheus, reachable from admin_cidr."
  value       = "http://${exoscale_compute_instance.monitor.public_ip_address}:9090"
}

output "pool_id" {
  description = "The instance pool's id (EXOSCALE_INSTANCEPOOL_ID)."
  value       = exoscale_instance_pool.app.id
}

output "hourly_cost_eur" {
  description = "Compute and NLB at list prices: at the initial size, and with the pool at its maximum."
  value = {
    at_initial_size = local.hourly_price[var.monitor_instance_type] + var.pool_size * local.hourly_price[var.pool_instance_type] + local.nlb_hourly_price
    at_max_size     = local.hourly_price[var.monitor_instance_type] + var.pool_max * local.hourly_price[var.pool_instance_type] + local.nlb_hourly_price
  }
}
