# Every secret the deployment needs, generated once and kept in the state (a second apply
# changes nothing), unless you pass your own (variables.tf). Letters and digits only: nothing a
# YAML, systemd or Grafana parser could read as syntax. `terraform output -raw NAME` shows each.

resource "random_password" "webhook_token" {
  length  = 32
  special = false
}

resource "random_password" "drain_token" {
  length  = 32
  special = false
}

resource "random_password" "grafana_admin_password" {
  length  = 24
  special = false
}

resource "random_password" "prometheus_password" {
  length  = 24
  special = false
}

# Encrypts the secrets Grafana stores in its database (the contact points' token). Grafana
# cannot read those secrets under another key, so it is never overridable and never changes.
resource "random_password" "grafana_secret_key" {
  length  = 40
  special = false
}

locals {
  webhook_token          = coalesce(var.webhook_token, random_password.webhook_token.result)
  drain_token            = coalesce(var.drain_token, random_password.drain_token.result)
  grafana_admin_password = coalesce(var.grafana_admin_password, random_password.grafana_admin_password.result)
  prometheus_password    = coalesce(var.prometheus_password, random_password.prometheus_password.result)
}

# Prometheus checks the password against a bcrypt hash (its web config). bcrypt() salts at
# random, so the hash is computed once per password and kept: `input` is ignored afterwards and
# a new password (its digest is the trigger) makes a new hash. Cost 6: the password is 24
# random characters, so brute force is out of reach anyway, and Prometheus checks the hash on
# every request (Grafana's queries), which the default cost 10 would make slow on a small VM.
resource "terraform_data" "prometheus_password_hash" {
  input            = bcrypt(local.prometheus_password, 6)
  triggers_replace = [sha256(local.prometheus_password)]

  lifecycle {
    ignore_changes = [input]
  }
}
