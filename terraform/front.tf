# The front (with more than one zone, or front = true): `poolpilot front` on port 80 of a VM in
# the first zone, over every zone's NLB, answering on an Elastic IP, the service's static
# address. It ejects a zone whose NLB fails (more than 10 non-200 answers) and retries each
# request on another, so a zone's loss costs no client request (README, "The front").
#
# The Elastic IP is a manual one (no health check): one instance holds it, so a managed EIP's
# check would only add a way to drop all traffic. A manual EIP's traffic reaches the instance
# addressed to the EIP itself, so the guest must hold the address: the front image adds it to
# `lo` at boot (nixos-modules/front.nix) from POOLPILOT_ELASTIC_IP in its user-data. The front's
# own requests to the NLBs leave from its native address (an EIP carries inbound traffic only),
# which is the address the pools admit (security.tf).

resource "exoscale_elastic_ip" "front" {
  count       = local.front ? 1 : 0
  zone        = local.primary_zone
  description = "poolpilot: the front's static address (port 80)"
}

# cloud-init writes the user-data once, at the first boot: new backends (a zone added or
# removed, an NLB replaced) replace the front.
resource "terraform_data" "front_settings" {
  count = local.front ? 1 : 0
  input = sha256(module.userdata.front)
}

resource "exoscale_compute_instance" "front" {
  count              = local.front ? 1 : 0
  zone               = local.primary_zone
  name               = "${var.name_prefix}-front"
  template_id        = data.exoscale_template.front[0].id
  type               = lower(var.front_instance_type)
  disk_size          = var.disk_size
  ssh_keys           = local.ssh_key_name == null ? [] : [local.ssh_key_name]
  security_group_ids = [exoscale_security_group.front[0].id]
  elastic_ip_ids     = [exoscale_elastic_ip.front[0].id]
  # Settings only: the backends and the Elastic IP; the image has everything installed.
  user_data = module.userdata.front

  lifecycle {
    replace_triggered_by = [terraform_data.front_settings]
  }
}
