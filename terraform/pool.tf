resource "exoscale_ssh_key" "admin" {
  count      = var.ssh_public_key == null ? 0 : 1
  name       = "${var.name_prefix}-admin"
  public_key = var.ssh_public_key
}

locals {
  ssh_key_name = var.ssh_public_key != null ? exoscale_ssh_key.admin[0].name : var.ssh_key_name
}

# One pool per zone, each sized on its own by the one autoscaler (same bounds for each).
resource "exoscale_instance_pool" "app" {
  for_each = toset(local.app_zones)

  zone          = each.key
  name          = var.name_prefix
  description   = "poolpilot: the slow app in ${each.key}, sized by the autoscaler"
  template_id   = data.exoscale_template.pool[each.key].id
  instance_type = lower(var.pool_instance_type)
  disk_size     = var.disk_size
  size          = var.pool_size
  # With several zones the members' names say their zone (Grafana shows them side by side).
  instance_prefix    = length(local.zones) == 1 ? var.name_prefix : "${var.name_prefix}-${each.key}"
  key_pair           = local.ssh_key_name
  security_group_ids = [exoscale_security_group.pool.id]
  # Settings only: the image has everything installed. A change here (or of the template) is
  # an in-place update of the pool: members created afterwards get it, running members keep
  # theirs until they are replaced (the API has no rolling update; README "Second applies").
  user_data = module.userdata.pool

  lifecycle {
    # The autoscaler owns the size once the pool exists.
    ignore_changes = [size]

    precondition {
      condition     = var.pool_min <= var.pool_size && var.pool_size <= var.pool_max
      error_message = "The bounds must hold 1 <= pool_min <= pool_size <= pool_max <= 20 (got pool_min = ${var.pool_min}, pool_size = ${var.pool_size}, pool_max = ${var.pool_max})."
    }
  }
}
