# The appliance images become private templates here, from `terraform apply` itself: the
# provider has no template resource, so a terraform_data runs `poolpilot template push` (upload
# to object storage, pre-signed URL, register-template, wait) and, on destroy, `poolpilot
# template delete` (the template and the uploaded object: template storage is billed until
# deleted).
#
# Each template's name ends with a digest of its image: the image's MD5 (files, urls) or, for
# `nix`, of the sources Nix builds it from (the build is only run at apply time). An unchanged
# image keeps its name, so nothing is re-registered; a changed one is pushed under a new name,
# the machines move to it (the monitor is replaced, the pool's new members use it) and the old
# template is deleted.
#
# Templates are zonal: the pool image is registered in every zone, the monitor's and the
# front's in the first (module.layout.templates). Object storage is zonal too and bucket names
# are global, so each zone uploads to its own bucket (module.layout.buckets).

resource "random_id" "bucket" {
  byte_length = 4
}

module "layout" {
  source = "./layout"

  zones           = var.zones == null ? [var.zone] : var.zones
  front           = var.front
  profile         = var.profile
  name_prefix     = var.name_prefix
  template_bucket = coalesce(var.template_bucket, "${var.name_prefix}-templates-${random_id.bucket.hex}")
}

locals {
  repo         = abspath("${path.module}/..")
  zones        = module.layout.zones
  primary_zone = module.layout.primary
  front        = module.layout.front
  redis        = module.layout.profile == "redis"
  # The zones that run the course's pool and NLB: every zone, or none with profile = "redis".
  app_zones       = local.redis ? [] : local.zones
  template_bucket = module.layout.buckets[local.primary_zone]
  poolpilot = coalesce(var.poolpilot_command,
  var.image_source == "nix" ? "nix run ${local.repo}#poolpilot --" : "poolpilot")

  # What the nix build reads: the flake, the Rust sources, the modules and the files they ship.
  nix_inputs = sort(distinct(flatten([
    for pattern in ["flake.nix", "flake.lock", "Cargo.toml", "Cargo.lock", "src/**", "nixos-modules/**", "images/**", "monitoring/**", "examples/**", "reference/**"] :
    tolist(fileset(local.repo, pattern))
  ])))
  nix_digest = var.image_source == "nix" ? sha256(join("\n", [for f in local.nix_inputs : "${f} ${filesha256("${local.repo}/${f}")}"])) : ""

  # With profile = "redis" the monitor is the kv monitor (two pools, the Redis exporters).
  image_attrs = {
    pool    = "pool-node-image"
    monitor = local.redis ? "kv-monitor-image" : "monitor-image"
    front   = "front-image"
    primary = "redis-primary-image"
    replica = "redis-replica-image"
    kv      = "kv-node-image"
  }
  images = { for role, attr in local.image_attrs : role => {
    attr   = attr
    digest = var.image_source == "nix" ? local.nix_digest : var.image_source == "files" ? try(filemd5(var.image_files[role]), "") : try(var.image_urls[role].md5, "")
    file   = var.image_source == "files" ? try(abspath(var.image_files[role]), "") : ""
    url    = var.image_source == "urls" ? try(var.image_urls[role].url, "") : ""
  } }
  # The kv monitor is another image than the course's monitor from the same sources (the same
  # nix digest): its own name, so switching profiles never reuses the other's template.
  template_names = { for role, i in local.images : role => "${var.name_prefix}-${role == "monitor" && local.redis ? "kv-monitor" : role}-${substr(i.digest, 0, 12)}" }
}

resource "terraform_data" "template" {
  # "ROLE/ZONE" => { role, zone }
  for_each = module.layout.templates

  # Everything the destroy-time command needs must be here: it may only read `self`. The key is
  # the template key (iam.tf), or yours with create_iam_keys = false; the state holds it either way.
  # Since the commands' environment carries it, Terraform prints their output only when one
  # fails (it hides output that could hold a sensitive value).
  input = {
    zone      = each.value.zone
    name      = local.template_names[each.value.role]
    bucket    = var.image_source == "urls" ? "" : module.layout.buckets[each.value.zone]
    poolpilot = local.poolpilot
    key       = local.template_key
    secret    = local.template_secret
  }
  triggers_replace = [local.template_names[each.value.role], each.value.zone, module.layout.buckets[each.value.zone]]

  lifecycle {
    # A changed image is pushed under its new name before the old template is deleted, so the
    # machines never point at a deleted template.
    create_before_destroy = true

    precondition {
      condition     = var.image_source != "files" || local.images[each.value.role].digest != ""
      error_message = "image_source = \"files\" needs image_files = { pool = \"...qcow2\", monitor = \"...qcow2\" } (and front = \"...qcow2\" with the front; with profile = \"redis\": monitor, primary, replica and kv), each readable (the ${each.value.role} image is missing or unreadable)."
    }
    precondition {
      condition     = var.image_source != "urls" || local.images[each.value.role].digest != ""
      error_message = "image_source = \"urls\" needs image_urls = { pool = { url, md5 }, monitor = { url, md5 } } (and front = { url, md5 } with the front; with profile = \"redis\": monitor, primary, replica and kv; the ${each.value.role} image is missing)."
    }
    precondition {
      condition     = length(module.layout.buckets[each.value.zone]) <= 63
      error_message = "The bucket of ${each.value.zone}, ${module.layout.buckets[each.value.zone]}, is longer than 63 characters: shorten template_bucket (the other zones' buckets append -ZONE)."
    }
  }

  provisioner "local-exec" {
    interpreter = ["/bin/sh", "-c"]
    command     = <<-EOT
      set -eu
      case "$IMAGE_SOURCE" in
        nix)
          nix build "$REPO#$ATTR" --out-link "$REPO/terraform/.images/$ROLE-$ZONE"
          file=$(find -L "$REPO/terraform/.images/$ROLE-$ZONE" -maxdepth 1 -name '*.qcow2' | head -n 1)
          [ -n "$file" ] || { echo "no qcow2 in the $ATTR build" >&2; exit 1; }
          $POOLPILOT template push --zone "$ZONE" --bucket "$BUCKET" --name "$NAME" --file "$file" --json ;;
        files)
          $POOLPILOT template push --zone "$ZONE" --bucket "$BUCKET" --name "$NAME" --file "$FILE" --json ;;
        urls)
          $POOLPILOT template register --zone "$ZONE" --name "$NAME" --url "$URL" --checksum "$DIGEST" ;;
      esac
    EOT
    environment = {
      IMAGE_SOURCE        = var.image_source
      REPO                = local.repo
      ROLE                = each.value.role
      ATTR                = local.images[each.value.role].attr
      FILE                = local.images[each.value.role].file
      URL                 = local.images[each.value.role].url
      DIGEST              = local.images[each.value.role].digest
      ZONE                = self.input.zone
      NAME                = self.input.name
      BUCKET              = self.input.bucket
      POOLPILOT           = self.input.poolpilot
      EXOSCALE_API_KEY    = self.input.key
      EXOSCALE_API_SECRET = self.input.secret
    }
  }

  provisioner "local-exec" {
    when        = destroy
    interpreter = ["/bin/sh", "-c"]
    command     = "$POOLPILOT template delete --zone \"$ZONE\" --name \"$NAME\" $${BUCKET:+--bucket \"$BUCKET\"}"
    environment = {
      ZONE                = self.input.zone
      NAME                = self.input.name
      BUCKET              = self.input.bucket
      POOLPILOT           = self.input.poolpilot
      EXOSCALE_API_KEY    = self.input.key
      EXOSCALE_API_SECRET = self.input.secret
    }
  }
}

# The registered templates, read once the push has run (depends_on defers the read to apply
# time whenever the push changes): the pool's in every zone, the monitor's and the front's in
# the first.
data "exoscale_template" "pool" {
  for_each   = toset(local.app_zones)
  zone       = each.key
  name       = local.template_names["pool"]
  visibility = "private"
  depends_on = [terraform_data.template]
}

data "exoscale_template" "monitor" {
  zone       = local.primary_zone
  name       = local.template_names["monitor"]
  visibility = "private"
  depends_on = [terraform_data.template]
}

data "exoscale_template" "front" {
  count      = local.front ? 1 : 0
  zone       = local.primary_zone
  name       = local.template_names["front"]
  visibility = "private"
  depends_on = [terraform_data.template]
}

# profile = "redis": the primary's, the replicas' and the kv API members' templates, in its one zone.
data "exoscale_template" "redis" {
  for_each   = toset(local.redis ? ["primary", "replica", "kv"] : [])
  zone       = local.primary_zone
  name       = local.template_names[each.key]
  visibility = "private"
  depends_on = [terraform_data.template]
}
