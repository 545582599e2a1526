terraform {
  required_version = ">= 1.5"

  required_providers {
    exoscale = {
      source  = "exoscale/exoscale"
      version = "~> 0.70"
    }
    # Grafana's secret key, generated once and kept in the state.
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
