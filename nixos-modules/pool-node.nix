# A pool member: the slow app on 8080 and node_exporter on 9100. The security group Terraform
# creates admits 9100 from the monitor's group only; the host firewall opens both ports.
{ config, lib, pkgs, ... }:

{
  services.poolpilot.app.enable = true;

  services.prometheus.exporters.node = {
    enable = true;
    port = 9100;
    listenAddress = "0.0.0.0";
    enabledCollectors = [ "systemd" ];
  };

  # The app needs no API credentials; only POOLPILOT_DRAIN_TOKEN, for graceful scale-in. SSH's
  # port is opened by services.openssh.openFirewall (default true).
  networking.firewall = {
    enable = true;
    allowedTCPPorts = [ 8080 9100 ];
  };
}
