data "exoscale_template" "pool" {
  zone       = var.zone
  name       = var.pool_template
  visibility = "private"
}

resource "exoscale_instance_pool" "app" {
  zone               = var.zone
  name               = "poolpilot"
  description        = "poolpilot: the slow app, sized by the autoscaler"
  template_id        = data.exoscale_template.pool.id
  instance_type      = var.pool_instance_type
  disk_size          = var.disk_size
  size               = var.pool_size
  instance_prefix    = "poolpilot"
  key_pair           = var.ssh_key_name
  security_group_ids = [exoscale_security_group.pool.id]
  user_data = templatefile("${path.module}/userdata/pool-node.yaml.tftpl", {
    drain_token = var.drain_token
  })

  lifecycle {
    # The autoscaler owns the size once the pool exists.
    ignore_changes = [size]
  }
}
