terraform {
  required_version = ">= 1.5"

  required_providers {
    # A pre-1.0 provider whose minor releases have changed configurations: patch releases only.
    # (No .terraform.lock.hcl is committed: it can only be made where the registry answers;
    # `terraform providers lock` on your machine writes one.)
    exoscale = {
      source  = "exoscale/exoscale"
      version = "~> 0.70.0"
    }
    # Tokens and passwords, generated once and kept in the state (secrets.tf).
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "exoscale" {
  key    = var.exoscale_key
  secret = var.exoscale_secret
}
