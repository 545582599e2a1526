locals {
  # Hourly list prices in EUR (unofficial: Exoscale's public price list as of 2025, the
  # figures karpenter-provider-exoscale carries). A type missing here is reported as unknown;
  # it never breaks the plan.
  hourly_price = {
    "standard.micro"  = 0.00729
    "standard.tiny"   = 0.01458
    "standard.small"  = 0.02333
    "standard.medium" = 0.04666
    "standard.large"  = 0.09333
  }
  nlb_hourly_price = 0.03472
  # Block storage per GiB-hour (every instance's disk) and template storage per GiB-hour (the
  # two templates, billed until deleted: `terraform destroy` deletes them).
  disk_gib_hourly_price     = 0.00014
  template_gib_hourly_price = 0.00028

  monitor_price = lookup(local.hourly_price, lower(var.monitor_instance_type), null)
  member_price  = lookup(local.hourly_price, lower(var.pool_instance_type), null)
  fixed_price = local.monitor_price == null ? null : (
    local.monitor_price + local.nlb_hourly_price + var.disk_size * local.disk_gib_hourly_price
    + 2 * 10 * local.template_gib_hourly_price
  )
  per_member_price = local.member_price == null ? null : local.member_price + var.disk_size * local.disk_gib_hourly_price
}

output "nlb_address" {
  description = "Send the load here: http://<nlb_address>/load"
  value       = exoscale_nlb.app.ip_address
}

output "grafana_url" {
  description = "Grafana (user admin, password: terraform output -raw grafana_admin_password), reachable from admin_cidrs."
  value       = "http://${exoscale_compute_instance.monitor.public_ip_address}:3000"
}

output "prometheus_url" {
  description = "Prometheus (user prometheus, password: terraform output -raw prometheus_password), reachable from admin_cidrs."
  value       = "http://${exoscale_compute_instance.monitor.public_ip_address}:9090"
}

output "pool_id" {
  description = "The instance pool's id (EXOSCALE_INSTANCEPOOL_ID)."
  value       = exoscale_instance_pool.app.id
}

output "templates" {
  description = "The private templates Terraform registered (deleted by terraform destroy)."
  value       = { pool = data.exoscale_template.pool.id, monitor = data.exoscale_template.monitor.id }
}

output "template_bucket" {
  description = "The object storage bucket holding the uploaded images."
  value       = local.template_bucket
}

output "grafana_admin_password" {
  description = "Grafana's admin password."
  value       = local.grafana_admin_password
  sensitive   = true
}

output "prometheus_password" {
  description = "Prometheus' password (user prometheus)."
  value       = local.prometheus_password
  sensitive   = true
}

output "webhook_token" {
  description = "The token Grafana's webhooks carry to the autoscaler."
  value       = local.webhook_token
  sensitive   = true
}

output "drain_token" {
  description = "The token of the pool members' drain switch."
  value       = local.drain_token
  sensitive   = true
}

output "hourly_cost_eur" {
  description = "List price per hour: compute, NLB, disks and the two templates; at the initial size and with the pool at its maximum. null (with a note) for an instance type missing from the price table."
  value = {
    at_initial_size = local.fixed_price == null || local.per_member_price == null ? null : local.fixed_price + var.pool_size * local.per_member_price
    at_max_size     = local.fixed_price == null || local.per_member_price == null ? null : local.fixed_price + var.pool_max * local.per_member_price
    note = join(" ", compact([
      local.monitor_price == null ? "unknown price for ${var.monitor_instance_type}." : "",
      local.member_price == null ? "unknown price for ${var.pool_instance_type}." : "",
      "Object storage (the uploaded images) and traffic are not included.",
    ]))
  }
}
