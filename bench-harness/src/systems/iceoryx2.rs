//! Eclipse iceoryx2 (the `iceoryx2` crate, pure Rust): zero-copy publish/subscribe
//! over shared memory, the reference for same-host IPC (issue 12).
//!
//! Variant `ipc` (system `iceoryx2`, transport `ipc`), lossless as every IPC row
//! here: the service has safe overflow off (a full subscriber buffer is never
//! overwritten) and the publisher's backpressure strategy is `RetryUntilDelivered`
//! (`send` waits until the subscriber took something from its full buffer), so any
//! loss marks the run FAILED. Payloads are `[u8]` slices: `loan_slice_uninit`,
//! `write_from_slice` (the one copy from the application), `send`; the subscriber's
//! `receive` lends each sample in place. The subscriber's buffer holds
//! [`BUFFER`] samples; it polls in a spin loop (as Aeron's IPC subscriber and
//! ringcast's `ipc` variant do).
//!
//! The service is named after the run's ipc path (unique per run and direction), so
//! the round trip's two directions are two services. iceoryx2 delivers to the
//! subscribers connected when a sample is sent: the subscriber starts first and the
//! publisher's warm-up messages come before the measured ones, as for every system.
//!
//! Compiled in with the cargo feature `iceoryx2` (default); without it the system
//! reports "not built".

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;

pub fn variants() -> Vec<Variant> {
    vec![Variant {
        system: "iceoryx2".into(),
        variant: "ipc".into(),
        transport: "ipc".into(),
        lossless_expected: true,
        primary: true,
        params: Params::Iceoryx2 {},
    }]
}

/// Samples a subscriber's buffer holds (the publisher waits when it is full).
pub const BUFFER: usize = 2048;

#[cfg(not(feature = "iceoryx2"))]
pub const UNAVAILABLE: Option<&str> = Some("not built: cargo feature `iceoryx2` is off");
#[cfg(feature = "iceoryx2")]
pub const UNAVAILABLE: Option<&str> = None;

#[cfg(not(feature = "iceoryx2"))]
pub fn open_publisher(_: &RunSpec) -> Result<Box<dyn Publisher>> {
    anyhow::bail!("iceoryx2 {}", UNAVAILABLE.unwrap_or_default())
}
#[cfg(not(feature = "iceoryx2"))]
pub fn open_subscriber(_: &RunSpec) -> Result<Box<dyn Subscriber>> {
    anyhow::bail!("iceoryx2 {}", UNAVAILABLE.unwrap_or_default())
}

/// The crate's version, for the environment record.
pub fn library_version() -> Option<String> {
    cfg!(feature = "iceoryx2").then(|| "0.10".to_owned())
}

#[cfg(feature = "iceoryx2")]
pub use imp::{open_publisher, open_subscriber};

#[cfg(feature = "iceoryx2")]
mod imp {
    use super::*;
    use crate::systems::{Counters, Info};
    use anyhow::{anyhow, Context};
    use iceoryx2::port::update_connections::UpdateConnections;
    use iceoryx2::prelude::*;
    use std::time::{Duration, Instant};

    type Service = iceoryx2::service::ipc::Service;
    type Pub = iceoryx2::port::publisher::Publisher<Service, [u8], ()>;
    type Sub = iceoryx2::port::subscriber::Subscriber<Service, [u8], ()>;
    type IoxNode = iceoryx2::node::Node<Service>;
    type Factory =
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], ()>;

    /// The service name for `spec`: from its unique ipc path.
    fn service_name(spec: &RunSpec) -> Result<String> {
        let name = spec
            .endpoint
            .ipc
            .file_name()
            .and_then(|n| n.to_str())
            .context("ipc path without a name")?;
        Ok(format!("ringcast-bench/{name}"))
    }

    fn open(spec: &RunSpec) -> Result<(IoxNode, Factory)> {
        // (quiet: iceoryx2 logs at info by default)
        set_log_level(LogLevel::Warn);
        let node = NodeBuilder::new()
            .create::<Service>()
            .map_err(|e| anyhow!("iceoryx2 node: {e:?}"))?;
        let name = service_name(spec)?;
        let service_name: ServiceName = name
            .as_str()
            .try_into()
            .map_err(|e| anyhow!("iceoryx2 service name {name}: {e:?}"))?;
        let service = node
            .service_builder(&service_name)
            .publish_subscribe::<[u8]>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(BUFFER)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(2)
            .open_or_create()
            .map_err(|e| anyhow!("iceoryx2 service {name}: {e:?}"))?;
        Ok((node, service))
    }

    struct IoxPublisher {
        publisher: Pub,
        _node: IoxNode,
        sends: u64,
        delivered_to_none: u64,
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        let (node, service) = open(spec)?;
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(spec.size.max(1))
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| anyhow!("iceoryx2 publisher: {e:?}"))?;
        Ok(Box::new(IoxPublisher {
            publisher,
            _node: node,
            sends: 0,
            delivered_to_none: 0,
        }))
    }

    impl Publisher for IoxPublisher {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            let sample = self
                .publisher
                .loan_slice_uninit(msg.len())
                .map_err(|e| anyhow!("iceoryx2 loan: {e:?}"))?;
            let sample = sample.write_from_slice(msg);
            let n = sample.send().map_err(|e| anyhow!("iceoryx2 send: {e:?}"))?;
            self.sends += 1;
            if n == 0 {
                // No subscriber connected (yet): the sample reached nobody.
                self.delivered_to_none += 1;
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn do_work(&mut self) -> Result<usize> {
            // Connects subscribers that came meanwhile.
            self.publisher
                .update_connections()
                .map_err(|e| anyhow!("iceoryx2 connections: {e:?}"))?;
            Ok(0)
        }
        fn counters(&self) -> Counters {
            Counters::from([
                ("sends".into(), self.sends),
                ("delivered_to_none".into(), self.delivered_to_none),
            ])
        }
        fn info(&self) -> Info {
            Info::from([
                ("buffer".into(), BUFFER.to_string()),
                ("backpressure".into(), "RetryUntilDelivered".into()),
            ])
        }
    }

    struct IoxSubscriber {
        subscriber: Sub,
        _node: IoxNode,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        let (node, service) = open(spec)?;
        let subscriber = service
            .subscriber_builder()
            .create()
            .map_err(|e| anyhow!("iceoryx2 subscriber: {e:?}"))?;
        Ok(Box::new(IoxSubscriber {
            subscriber,
            _node: node,
        }))
    }

    impl IoxSubscriber {
        fn take(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let mut n = 0;
            while n < 256 {
                match self.subscriber.receive() {
                    Ok(Some(sample)) => {
                        on_msg(sample.payload());
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(anyhow!("iceoryx2 receive: {e:?}")),
                }
            }
            Ok(n)
        }
    }

    impl Subscriber for IoxSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let deadline = Instant::now() + timeout;
            loop {
                let n = self.take(on_msg)?;
                if n > 0 || Instant::now() >= deadline {
                    return Ok(n);
                }
                std::hint::spin_loop();
            }
        }
        fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            self.take(on_msg)
        }
        fn info(&self) -> Info {
            Info::from([("buffer".into(), self.subscriber.buffer_size().to_string())])
        }
    }
}
