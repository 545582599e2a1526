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
  # An Elastic IP: an assumption, about 5 EUR a month; no figure for it was found in the
  # sources above. Check the price list before relying on it.
  eip_hourly_price = 0.00694
  # Block storage per GiB-hour (every instance's disk) and template storage per GiB-hour (each
  # registered template of 10 GiB, billed until deleted: `terraform destroy` deletes them).
  disk_gib_hourly_price     = 0.00014
  template_gib_hourly_price = 0.00028

  monitor_price = lookup(local.hourly_price, lower(var.monitor_instance_type), null)
  member_price  = lookup(local.hourly_price, lower(var.pool_instance_type), null)
  front_price   = local.front ? lookup(local.hourly_price, lower(var.front_instance_type), null) : 0
  primary_price = local.redis ? lookup(local.hourly_price, lower(var.redis_instance_type), null) : 0
  # The pools the autoscaler sizes and the NLBs: course, one of each per zone; redis, two pools
  # (replicas, API) and two NLBs (the API's, the replicas').
  pool_count = local.redis ? 2 : length(local.zones)
  nlb_count  = local.redis ? 2 : length(local.zones)
  # Fixed: the monitor, the NLBs, the front and its Elastic IP, the Redis primary, their disks,
  # and every template (course: the pool's in each zone, the monitor's and the front's once;
  # redis: the monitor's, the primary's, the replicas' and the API's).
  fixed_price = local.monitor_price == null || local.front_price == null || local.primary_price == null ? null : (
    local.monitor_price + local.nlb_count * local.nlb_hourly_price + var.disk_size * local.disk_gib_hourly_price
    + (local.front ? local.front_price + local.eip_hourly_price + var.disk_size * local.disk_gib_hourly_price : 0)
    + (local.redis ? local.primary_price + var.disk_size * local.disk_gib_hourly_price : 0)
    + length(module.layout.templates) * 10 * local.template_gib_hourly_price
  )
  per_member_price = local.member_price == null ? null : local.member_price + var.disk_size * local.disk_gib_hourly_price
}

output "nlb_address" {
  description = "Without the front, send the load here: http://<nlb_address>/load (the first zone's NLB; nlb_addresses lists every zone's)."
  value       = local.redis ? null : exoscale_nlb.app[local.primary_zone].ip_address
}

output "nlb_addresses" {
  description = "Each zone's NLB address, zone => address (the front's backends)."
  value       = { for z, n in exoscale_nlb.app : z => n.ip_address }
}

output "front_ip" {
  description = "The front's static address, the Elastic IP (null without the front): only port 80 is open there."
  value       = local.front ? exoscale_elastic_ip.front[0].ip_address : null
}

output "front_url" {
  description = "With the front, send the load here: <front_url>/load (null without the front)."
  value       = local.front ? "http://${exoscale_elastic_ip.front[0].ip_address}" : null
}

output "kv_url" {
  description = "profile = \"redis\": the key-value API (README, \"The key-value API: poolpilot kv\"; null otherwise)."
  value       = local.redis ? "http://${exoscale_nlb.kv["api"].ip_address}" : null
}

output "redis_primary_ip" {
  description = "profile = \"redis\": the Redis primary's address (its 6379 admits the replicas and the API members only; null otherwise)."
  value       = local.redis ? exoscale_compute_instance.redis_primary[0].public_ip_address : null
}

output "redis_replicas_address" {
  description = "profile = \"redis\": the replicas' NLB (6379, admitted from the API members only; null otherwise)."
  value       = local.redis ? exoscale_nlb.kv["replicas"].ip_address : null
}

output "kv_pool_ids" {
  description = "profile = \"redis\": the replica and API pools' ids, { replicas, api } (null otherwise)."
  value       = local.redis ? { for name, p in exoscale_instance_pool.kv : name => p.id } : null
}

output "zones" {
  description = "The zones, in order (the first holds the monitor and the front)."
  value       = local.zones
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
  description = "The first zone's instance pool id (pool_ids lists every zone's)."
  value       = local.redis ? null : exoscale_instance_pool.app[local.primary_zone].id
}

output "pool_ids" {
  description = "Each zone's instance pool id, zone => id (the monitor's EXOSCALE_INSTANCEPOOL_ID lists them as ZONE:ID)."
  value       = { for z, p in exoscale_instance_pool.app : z => p.id }
}

output "templates" {
  description = "The private templates Terraform registered (deleted by terraform destroy): pool per zone, monitor and front in the first zone."
  value = merge(
    { for z, t in data.exoscale_template.pool : "pool/${z}" => t.id },
    { "monitor/${local.primary_zone}" = data.exoscale_template.monitor.id },
    { for t in data.exoscale_template.front : "front/${local.primary_zone}" => t.id },
    { for role, t in data.exoscale_template.redis : "${role}/${local.primary_zone}" => t.id },
  )
}

output "template_bucket" {
  description = "The object storage bucket holding the first zone's uploaded images (template_buckets lists every zone's)."
  value       = local.template_bucket
}

output "template_buckets" {
  description = "Each zone's image bucket, zone => bucket."
  value       = module.layout.buckets
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
  description = "List price per hour: compute, an NLB per zone (redis: the API's and the replicas'), the front and its Elastic IP, the Redis primary, disks and templates; with every pool (redis: the replicas' and the API's) at its initial size and at its maximum. null (with a note) for an instance type missing from the price table."
  value = {
    at_initial_size = local.fixed_price == null || local.per_member_price == null ? null : local.fixed_price + local.pool_count * var.pool_size * local.per_member_price
    at_max_size     = local.fixed_price == null || local.per_member_price == null ? null : local.fixed_price + local.pool_count * var.pool_max * local.per_member_price
    note = join(" ", compact([
      local.monitor_price == null ? "unknown price for ${var.monitor_instance_type}." : "",
      local.primary_price == null ? "unknown price for ${var.redis_instance_type}." : "",
      local.member_price == null ? "unknown price for ${var.pool_instance_type}." : "",
      local.front_price == null ? "unknown price for ${var.front_instance_type}." : "",
      local.front ? "The Elastic IP's price is an assumption (outputs.tf)." : "",
      "Object storage (the uploaded images) and traffic are not included.",
    ]))
  }
}
