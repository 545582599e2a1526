resource "exoscale_ssh_key" "admin" {
  count      = var.ssh_public_key == null ? 0 : 1
  name       = "${var.name_prefix}-admin"
  public_key = var.ssh_public_key
}

locals {
  ssh_key_name = var.ssh_public_key != null ? exoscale_ssh_key.admin[0].name : var.ssh_key_name
}

resource "exoscale_instance_pool" "app" {
  zone               = var.zone
  name               = var.name_prefix
  description        = "poolpilot: the slow app, sized by the autoscaler"
  template_id        = data.exoscale_template.pool.id
  instance_type      = lower(var.pool_instance_type)
  disk_size          = var.disk_size
  size               = var.pool_size
  instance_prefix    = var.name_prefix
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
