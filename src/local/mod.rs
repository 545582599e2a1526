//! The local mode: the whole autoscaling loop on one machine, with no cloud account.
//!
//! - [`backend::LocalBackend`] plays the simulator's instances with real `poolpilot app`
//!   processes, one per loopback address (127.0.1.x), each with its own CPU capacity and a
//!   node_exporter stand-in ([`node`]) on port 9100 of its address.
//! - [`nlb::Nlb`] plays the Network Load Balancer on 127.0.0.1:8080.
//! - `poolpilot demo` (the `demo` module, which uses this one) puts them together with
//!   discovery, Prometheus, Alertmanager, the autoscaler and a load profile.
//! - [`pools::PerPool`]: a zone whose pools run different images, each with its own backend.
//! - [`process`]: a child process that dies with us, for the instances and the demo alike.

pub mod backend;
pub mod nlb;
pub mod node;
pub mod pools;
pub mod process;
