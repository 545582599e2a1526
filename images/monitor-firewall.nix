# The monitor image's admin CIDR. The image is built before anyone's address is known, so the
# host firewall admits Grafana and Prometheus from anywhere and the Exoscale security group,
# which Terraform creates from its required `admin_cidr`, is the gate. A monitor deployed
# without that security group must set poolpilot.monitor.adminCidr itself.
{ lib, ... }:

{
  poolpilot.monitor.adminCidr = lib.mkDefault "0.0.0.0/0";
}
