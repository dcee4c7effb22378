//! Aeron 1.54 (the C client and media driver, built from the sources bundled in
//! the `rusteron-client` / `rusteron-media-driver` crates and linked statically).
//!
//! Variants:
//! * `ipc` — channel `aeron:ipc` (shared-memory log between the two processes);
//! * `udp` — channel `aeron:udp?endpoint=239.255.x.y:port|interface=127.0.0.1|ttl=0`,
//!   UDP multicast on loopback, default MTU (1408 bytes);
//! * `udp-invoker`, `ipc-invoker` — Aeron's best layout on a small host: the media
//!   driver in INVOKER threading mode and the client conductor in invoker mode, so
//!   no Aeron thread runs at all; the application's loops (every send, every spin
//!   of a paced wait, every subscription poll) call the driver's and the client's
//!   `main_do_work`. For UDP each process embeds its own driver (the publisher's
//!   sends, the subscriber's receives: `...-pub-aeron` and `...-sub-aeron`
//!   directories); IPC needs one shared driver, embedded in the publisher process.
//!
//! One embedded media driver per run, started by the publisher child before it
//! reports BOUND and shut down when it exits; the subscriber child connects to it
//! through the run's Aeron directory (`/dev/shm/ringcast-bench-<harness pid>-<run
//! index>-aeron`), which the driver deletes on shutdown (and the next publisher
//! sweeps if a killed run left one behind). The driver runs its agents in
//! dedicated threads: conductor and sender on the publisher's core, receiver on the
//! subscriber's core, as a host-wide driver would be pinned on a two-core box.
//!
//! The publisher offers to an exclusive publication and retries on back-pressure
//! (flow control makes Aeron lossless, so any loss marks the run FAILED); the
//! subscriber polls through a fragment assembler.
//!
//! Compiled in with the cargo feature `aeron` (`bash bench-harness/setup-aeron.sh`
//! installs what its build needs); without it the system reports "not built".

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;

pub fn variants() -> Vec<Variant> {
    let mk = |variant: &str, transport: &str, ipc, invoker: bool, primary| Variant {
        system: "aeron".into(),
        variant: variant.into(),
        transport: transport.into(),
        lossless_expected: true,
        primary,
        params: Params::Aeron { ipc, invoker },
    };
    vec![
        mk("ipc", "ipc", true, false, true),
        mk("udp", "udp-multicast", false, false, true),
        mk("ipc-invoker", "ipc", true, true, true),
        mk("udp-invoker", "udp-multicast", false, true, true),
    ]
}

#[cfg(not(feature = "aeron"))]
pub const UNAVAILABLE: Option<&str> = Some(
    "not built: cargo feature `aeron` is off (`bash bench-harness/setup-aeron.sh`, \
     then build with `--features aeron`)",
);
#[cfg(feature = "aeron")]
pub const UNAVAILABLE: Option<&str> = None;

#[cfg(not(feature = "aeron"))]
pub fn library_version() -> Option<String> {
    None
}

#[cfg(not(feature = "aeron"))]
pub fn open_publisher(_: &RunSpec) -> Result<Box<dyn Publisher>> {
    anyhow::bail!("aeron {}", UNAVAILABLE.unwrap_or_default())
}
#[cfg(not(feature = "aeron"))]
pub fn open_subscriber(_: &RunSpec) -> Result<Box<dyn Subscriber>> {
    anyhow::bail!("aeron {}", UNAVAILABLE.unwrap_or_default())
}

#[cfg(feature = "aeron")]
pub use imp::{library_version, open_publisher, open_subscriber};

#[cfg(feature = "aeron")]
mod imp {
    use super::*;
    use crate::netns;
    use crate::systems::{Counters, Info};
    use anyhow::{anyhow, bail, Context};
    use rusteron_client::{
        Aeron, AeronContext, AeronExclusivePublication, AeronFragmentClosureAssembler, AeronHeader,
        AeronOfferError, AeronSubscription, Handlers, IntoCString,
    };
    use rusteron_media_driver::bindings::aeron_threading_mode_enum;
    use rusteron_media_driver::{AeronDriver, AeronDriverContext};
    use std::cell::RefCell;
    use std::ffi::CString;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::{Path, PathBuf};
    use std::rc::{Rc, Weak};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const STREAM_ID: i32 = 1001;
    /// Round trip: the echo channel's stream (pongs).
    const ECHO_STREAM_ID: i32 = 1002;
    /// Fragments handed over per subscription poll.
    const FRAGMENT_LIMIT: usize = 256;
    /// How long adding a publication or subscription may take.
    const ADD_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a publication that was connected may stay disconnected mid-run.
    const RECONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Directory names: `ringcast-bench-<harness pid>-<run index>-aeron`.
    const DIR_PREFIX: &str = "ringcast-bench-";
    const DIR_SUFFIX: &str = "-aeron";

    fn stream_id(spec: &RunSpec) -> i32 {
        if spec.echo {
            ECHO_STREAM_ID
        } else {
            STREAM_ID
        }
    }

    pub fn library_version() -> Option<String> {
        Some(Aeron::version_full().to_owned())
    }

    fn ipc(spec: &RunSpec) -> bool {
        let Params::Aeron { ipc, .. } = spec.variant.params else {
            unreachable!("aeron spec without aeron params")
        };
        ipc
    }

    fn invoker(spec: &RunSpec) -> bool {
        let Params::Aeron { invoker, .. } = spec.variant.params else {
            unreachable!("aeron spec without aeron params")
        };
        invoker
    }

    /// Whether the object opened for `spec` (a publisher or a subscriber) starts
    /// the media driver: the forward publisher always (the one driver of the
    /// dedicated and IPC layouts, or the publisher process's own in UDP invoker
    /// mode), the forward subscriber in UDP invoker mode (its process's own
    /// driver); the echo channel of a round trip uses its process's driver.
    fn owns_driver(spec: &RunSpec, publisher: bool) -> bool {
        !spec.echo && (publisher || (invoker(spec) && !ipc(spec)))
    }

    /// Run the duty cycles that invoker mode leaves to the application: the
    /// driver's (if this object holds it) and the client conductor's.
    fn work(client: &Aeron, driver: Option<&AeronDriver>, invoker: bool) -> Result<usize> {
        if !invoker {
            return Ok(0);
        }
        let mut n = 0;
        if let Some(d) = driver {
            n += d
                .main_do_work()
                .map_err(driver_err("aeron driver do_work"))?
                .max(0) as usize;
        }
        n += client
            .main_do_work()
            .map_err(client_err("aeron client do_work"))?
            .max(0) as usize;
        Ok(n)
    }

    /// Aeron wants an odd last octet in a multicast data address (the control
    /// address is the next one up); both must pass the loopback guard.
    fn multicast_group(spec: &RunSpec) -> Result<SocketAddrV4> {
        let o = spec.endpoint.group.ip().octets();
        let last = if o[3] >= 254 { 253 } else { o[3] | 1 };
        let data = SocketAddrV4::new(
            Ipv4Addr::new(o[0], o[1], o[2], last),
            spec.endpoint.group.port(),
        );
        let control = SocketAddrV4::new(Ipv4Addr::new(o[0], o[1], o[2], last + 1), data.port());
        netns::check_multicast(data, spec.endpoint.iface)?;
        netns::check_multicast(control, spec.endpoint.iface)?;
        Ok(data)
    }

    /// The channel URI of the run: loopback only, TTL 0.
    ///
    /// Two things in Aeron's C driver are looser than the guards of the other
    /// systems: `ttl=0` means "not set" to it (it calls IP_MULTICAST_TTL only for
    /// ttl > 0, so the kernel default of 1 stays), and its multicast receive
    /// sockets bind 0.0.0.0:port. Its sends still go only to the two groups
    /// (239.255.x.y and .y+1) out of 127.0.0.1 (IP_MULTICAST_IF); to be sure
    /// nothing else can be reached, the UDP variant runs only in a network
    /// namespace that holds nothing but `lo` (as the harness makes when root).
    fn channel(spec: &RunSpec) -> Result<String> {
        if ipc(spec) {
            return Ok("aeron:ipc".to_owned());
        }
        let group = multicast_group(spec)?;
        let iface = spec.endpoint.iface;
        if !iface.is_loopback() {
            bail!("aeron interface {iface} is not loopback; refused");
        }
        let interfaces = netns::interface_names()?;
        if interfaces != ["lo"] {
            bail!(
                "aeron UDP runs only in a network namespace holding only `lo` (run the \
                 harness as root, or under `unshare -n`); here: {interfaces:?}"
            );
        }
        Ok(format!(
            "aeron:udp?endpoint={group}|interface={iface}|ttl=0"
        ))
    }

    /// Where the driver's files go: tmpfs if there is one.
    fn dir_base() -> PathBuf {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        }
    }

    /// The run's Aeron directory, derived from the run's unique ipc path
    /// (`ringcast-bench-<harness pid>-<index>.ipc`), so both children agree on it.
    fn aeron_dir(spec: &RunSpec, publisher: bool) -> Result<PathBuf> {
        let stem = spec
            .endpoint
            .ipc
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.starts_with(DIR_PREFIX))
            .with_context(|| format!("unexpected ipc path {}", spec.endpoint.ipc.display()))?;
        // The echo channel of a round trip (`...-echo.ipc`) uses the run's driver.
        let stem = stem.strip_suffix("-echo").unwrap_or(stem);
        if invoker(spec) && !ipc(spec) {
            // One driver per process: the publisher process holds the forward
            // publisher and the echo subscriber.
            let side = if publisher != spec.echo { "pub" } else { "sub" };
            return Ok(dir_base().join(format!("{stem}-{side}{DIR_SUFFIX}")));
        }
        Ok(dir_base().join(format!("{stem}{DIR_SUFFIX}")))
    }

    /// Remove Aeron directories left by harness processes that no longer exist
    /// (a run whose publisher was killed before its driver could delete its own).
    fn sweep_stale_dirs() {
        let Ok(entries) = std::fs::read_dir(dir_base()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(pid) = name
                .strip_prefix(DIR_PREFIX)
                .filter(|n| n.ends_with(DIR_SUFFIX))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Aeron's C client and driver read `AERON_*` variables (directories, name
    /// resolver addresses, socket settings) from the environment. The harness
    /// defines the whole configuration, so refuse to run with any of them set.
    fn refuse_aeron_env() -> Result<()> {
        let set: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("AERON_"))
            .collect();
        if !set.is_empty() {
            bail!(
                "refusing to run Aeron with {} set in the environment",
                set.join(", ")
            );
        }
        Ok(())
    }

    fn c_path(p: &Path) -> Result<CString> {
        CString::new(p.to_string_lossy().into_owned()).context("aeron dir path")
    }

    /// Turn an Aeron C error into an anyhow error now, while its message is current.
    fn client_err(what: &'static str) -> impl Fn(rusteron_client::AeronCError) -> anyhow::Error {
        move |e| anyhow!("{what}: {}", e.capture_errmsg())
    }
    fn driver_err(
        what: &'static str,
    ) -> impl Fn(rusteron_media_driver::AeronCError) -> anyhow::Error {
        move |e| anyhow!("{what}: {}", e.capture_errmsg())
    }

    /// A client connected to the driver in `dir`, counting the errors its
    /// conductor reports (the C default handler would exit the process).
    fn client(dir: &Path, side: &'static str, invoker: bool) -> Result<(Aeron, Arc<AtomicU64>)> {
        let errors = Arc::new(AtomicU64::new(0));
        let ctx = AeronContext::new().map_err(client_err("aeron client context"))?;
        if invoker {
            ctx.set_use_conductor_agent_invoker(true)
                .map_err(client_err("aeron client invoker mode"))?;
        }
        ctx.set_dir(&c_path(dir)?)
            .map_err(client_err("aeron client dir"))?;
        ctx.set_client_name(&format!("ringcast-bench-{side}").into_c_string())
            .map_err(client_err("aeron client name"))?;
        let counted = Arc::clone(&errors);
        ctx.set_error_handler(Some(move |code: i32, msg: &str| {
            counted.fetch_add(1, Ordering::Relaxed);
            eprintln!("aeron {side}: error {code}: {msg}");
        }))
        .map_err(client_err("aeron error handler"))?;
        let aeron = Aeron::new(&ctx).map_err(client_err("aeron client"))?;
        aeron.start().map_err(client_err("aeron client start"))?;
        Ok((aeron, errors))
    }

    /// The media driver's system counters worth reporting (label prefix → key).
    const SYSTEM_COUNTERS: &[(&str, &str)] = &[
        ("Bytes sent", "driver_bytes_sent"),
        ("Bytes received", "driver_bytes_received"),
        ("NAKs sent", "driver_naks_sent"),
        ("NAKs received", "driver_naks_received"),
        ("Retransmits sent", "driver_retransmits_sent"),
        ("Loss gap fills", "driver_loss_gap_fills"),
        ("Status Messages sent", "driver_status_messages_sent"),
        (
            "Sender flow control limits",
            "driver_sender_flow_control_limits",
        ),
        ("Short sends", "driver_short_sends"),
        ("Invalid packets", "driver_invalid_packets"),
        ("Errors", "driver_errors"),
    ];

    /// Read the driver's system counters (type id 0) through a client's CnC view.
    fn driver_counters(client: &Aeron) -> Counters {
        let mut out = Counters::new();
        client
            .counters_reader()
            .foreach_counter_fn(|value, _id, type_id, _key, label| {
                if type_id != 0 {
                    return;
                }
                if let Some((_, key)) = SYSTEM_COUNTERS.iter().find(|(p, _)| label.starts_with(p)) {
                    out.insert((*key).to_owned(), value.max(0) as u64);
                }
            });
        out
    }

    /// Deletes the Aeron directory when dropped (after the driver has closed).
    struct DirGuard(PathBuf);

    impl Drop for DirGuard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Socket buffers and receiver window of the driver, from `net.core.rmem_max`.
    #[derive(Debug, Clone, Copy)]
    struct Buffers {
        so_rcvbuf: usize,
        so_sndbuf: usize,
        window: usize,
    }

    /// Aeron's defaults (128 KiB SO_RCVBUF and receiver window) lose datagrams on
    /// loopback multicast, where each ~1 KiB datagram takes ~2.3 KiB of receive
    /// buffer, and NAK repair then caps a run at ~20k msg/s. Use Aeron's usual
    /// throughput settings instead: 2 MiB socket buffers (as far as rmem_max
    /// allows) and a receiver window of half the receive buffer.
    fn buffers() -> Buffers {
        const WANT: usize = 2 << 20;
        let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(WANT);
        let so_rcvbuf = WANT.min(rmem_max).max(128 << 10);
        Buffers {
            so_rcvbuf,
            so_sndbuf: WANT,
            window: (so_rcvbuf / 2).max(64 << 10),
        }
    }

    /// The embedded media driver: dedicated agent threads, conductor and sender on
    /// the publisher's core, receiver on the subscriber's core (threads it starts
    /// otherwise inherit the publisher's pinning).
    fn start_driver(spec: &RunSpec, dir: &Path, bufs: Buffers) -> Result<AeronDriver> {
        let ctx = AeronDriverContext::new().map_err(driver_err("aeron driver context"))?;
        ctx.set_dir(&c_path(dir)?)
            .map_err(driver_err("aeron driver dir"))?;
        ctx.set_dir_delete_on_start(true)
            .map_err(driver_err("aeron driver dir_delete_on_start"))?;
        ctx.set_dir_delete_on_shutdown(true)
            .map_err(driver_err("aeron driver dir_delete_on_shutdown"))?;
        let invoker = invoker(spec);
        ctx.set_threading_mode(if invoker {
            aeron_threading_mode_enum::AERON_THREADING_MODE_INVOKER
        } else {
            aeron_threading_mode_enum::AERON_THREADING_MODE_DEDICATED
        })
        .map_err(driver_err("aeron driver threading mode"))?;
        ctx.set_socket_so_rcvbuf(bufs.so_rcvbuf)
            .map_err(driver_err("aeron driver so_rcvbuf"))?;
        ctx.set_socket_so_sndbuf(bufs.so_sndbuf)
            .map_err(driver_err("aeron driver so_sndbuf"))?;
        ctx.set_rcv_initial_window_length(bufs.window)
            .map_err(driver_err("aeron driver receiver window"))?;
        if let (Some(c), false) = (spec.pub_core, invoker) {
            ctx.set_conductor_cpu_affinity(c as i32)
                .map_err(driver_err("aeron conductor affinity"))?;
            ctx.set_sender_cpu_affinity(c as i32)
                .map_err(driver_err("aeron sender affinity"))?;
        }
        if let (Some(c), false) = (spec.sub_core, invoker) {
            ctx.set_receiver_cpu_affinity(c as i32)
                .map_err(driver_err("aeron receiver affinity"))?;
        }
        if !invoker && (spec.pub_core.is_some() || spec.sub_core.is_some()) {
            ctx.set_thread_affinity_on_start();
        }
        let driver = AeronDriver::new(&ctx).map_err(driver_err("aeron driver"))?;
        // INVOKER mode needs the manual main loop: no driver thread at all.
        driver
            .start(invoker)
            .map_err(driver_err("aeron driver start"))?;
        if invoker {
            // A first duty cycle, so a client finds the driver alive.
            driver
                .main_do_work()
                .map_err(driver_err("aeron driver do_work"))?;
        }
        Ok(driver)
    }

    fn placement(spec: &RunSpec, bufs: Buffers) -> String {
        let core = |c: Option<usize>| c.map_or("unpinned".to_owned(), |c| format!("core {c}"));
        if invoker(spec) {
            return format!(
                "INVOKER threading: driver and client conductor duty cycles in the application \
                 loop, no Aeron threads ({}); SO_RCVBUF {} KiB, SO_SNDBUF {} KiB, receiver \
                 window {} KiB",
                if ipc(spec) {
                    "one driver, embedded in the publisher process"
                } else {
                    "a driver embedded in each process"
                },
                bufs.so_rcvbuf >> 10,
                bufs.so_sndbuf >> 10,
                bufs.window >> 10
            );
        }
        format!(
            "embedded in the publisher process; dedicated threads: conductor + sender {}, \
             receiver {}; SO_RCVBUF {} KiB, SO_SNDBUF {} KiB, receiver window {} KiB",
            core(spec.pub_core),
            core(spec.sub_core),
            bufs.so_rcvbuf >> 10,
            bufs.so_sndbuf >> 10,
            bufs.window >> 10
        )
    }

    struct AeronPublisher {
        // Field order is drop order: publication, client, driver, directory.
        publication: AeronExclusivePublication,
        client: Aeron,
        /// The media driver this object started, or (invoker mode, echo channel)
        /// the one its process embeds; `None` otherwise.
        driver: Option<Rc<AeronDriver>>,
        _dir: Option<DirGuard>,
        invoker: bool,
        errors: Arc<AtomicU64>,
        channel: String,
        placement: String,
        /// An offer has succeeded, so a subscriber is (or was) connected.
        connected: bool,
        offers: u64,
        back_pressured: u64,
        admin_actions: u64,
        /// Warm-up messages offered before any subscriber had connected.
        not_connected_drops: u64,
        max_message_length: usize,
        do_work_calls: u64,
    }

    thread_local! {
        /// The media driver embedded in this process, for the other objects of the
        /// process to drive in invoker mode (a round trip's echo channel).
        static DRIVER: RefCell<Weak<AeronDriver>> = const { RefCell::new(Weak::new()) };
    }

    /// Start the driver if this object owns it (sweeping stale directories first);
    /// otherwise, in invoker mode, share the one this process embeds (if any).
    fn own_driver(
        spec: &RunSpec,
        publisher: bool,
        dir: &Path,
        bufs: Buffers,
    ) -> Result<(Option<Rc<AeronDriver>>, Option<DirGuard>)> {
        if !owns_driver(spec, publisher) {
            let shared = DRIVER.with(|d| d.borrow().upgrade());
            return Ok((shared.filter(|_| invoker(spec)), None));
        }
        sweep_stale_dirs();
        let guard = DirGuard(dir.to_owned());
        let driver = Rc::new(start_driver(spec, dir, bufs)?);
        DRIVER.with(|d| *d.borrow_mut() = Rc::downgrade(&driver));
        Ok((Some(driver), Some(guard)))
    }

    /// Wait for an asynchronous add to finish, running the invoker duty cycles.
    fn added<T>(
        client: &Aeron,
        driver: Option<&AeronDriver>,
        invoker: bool,
        what: &'static str,
        mut poll: impl FnMut() -> std::result::Result<Option<T>, rusteron_client::AeronCError>,
    ) -> Result<T> {
        let deadline = Instant::now() + ADD_TIMEOUT;
        loop {
            work(client, driver, invoker)?;
            if let Some(t) = poll().map_err(client_err(what))? {
                return Ok(t);
            }
            if Instant::now() > deadline {
                bail!("{what}: timed out after {ADD_TIMEOUT:?}");
            }
            if invoker {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        refuse_aeron_env()?;
        let channel = channel(spec)?;
        let dir = aeron_dir(spec, true)?;
        let bufs = buffers();
        let invoker = invoker(spec);
        let (driver, guard) = own_driver(spec, true, &dir, bufs)?;
        let (client, errors) = client(&dir, "pub", invoker)?;
        let pending = client
            .async_add_exclusive_publication(&channel.clone().into_c_string(), stream_id(spec))
            .map_err(client_err("aeron add publication"))?;
        let publication = added(
            &client,
            driver.as_deref(),
            invoker,
            "aeron add publication",
            || pending.poll(),
        )
        .with_context(|| format!("publication on {channel}"))?;
        let max_message_length = publication
            .get_constants()
            .map_err(client_err("aeron publication constants"))?
            .max_message_length();
        if spec.size > max_message_length {
            bail!(
                "aeron cannot carry {}-byte messages (max {max_message_length})",
                spec.size
            );
        }
        Ok(Box::new(AeronPublisher {
            publication,
            client,
            driver,
            _dir: guard,
            invoker,
            errors,
            channel,
            placement: placement(spec, bufs),
            connected: false,
            offers: 0,
            back_pressured: 0,
            admin_actions: 0,
            not_connected_drops: 0,
            max_message_length,
            do_work_calls: 0,
        }))
    }

    /// Back off while the publication is full: spin briefly, then yield, so the
    /// driver's sender (sharing this core) gets to drain it.
    fn back_off(attempt: u32) {
        if attempt < 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    impl AeronPublisher {
        fn work(&mut self) -> Result<usize> {
            if !self.invoker {
                return Ok(0);
            }
            self.do_work_calls += 1;
            work(&self.client, self.driver.as_deref(), true)
        }
    }

    impl Publisher for AeronPublisher {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            let mut attempt = 0u32;
            let mut disconnected_since: Option<Instant> = None;
            loop {
                self.offers += 1;
                match self.publication.offer(msg) {
                    Ok(_) => {
                        self.connected = true;
                        // Invoker mode: the driver's sender runs here, right away.
                        self.work()?;
                        return Ok(());
                    }
                    Err(AeronOfferError::BackPressured) => self.back_pressured += 1,
                    Err(AeronOfferError::AdminAction) => self.admin_actions += 1,
                    Err(AeronOfferError::NotConnected) if !self.connected => {
                        // Only warm-ups are sent before the subscriber has seen one.
                        self.not_connected_drops += 1;
                        self.work()?;
                        return Ok(());
                    }
                    Err(AeronOfferError::NotConnected) => {
                        let since = *disconnected_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > RECONNECT_TIMEOUT {
                            bail!(
                                "aeron publication lost its subscriber for {RECONNECT_TIMEOUT:?}"
                            );
                        }
                    }
                    Err(e) => return Err(anyhow!("aeron offer on {}: {e}", self.channel)),
                }
                // Invoker mode: nothing drains the publication unless we do.
                if self.work()? == 0 {
                    back_off(attempt);
                }
                attempt = attempt.saturating_add(1);
            }
        }

        fn flush(&mut self) -> Result<()> {
            Ok(())
        }

        fn do_work(&mut self) -> Result<usize> {
            self.work()
        }

        fn counters(&self) -> Counters {
            let mut c = driver_counters(&self.client);
            c.extend([
                ("offers".into(), self.offers),
                ("back_pressured".into(), self.back_pressured),
                ("admin_actions".into(), self.admin_actions),
                ("not_connected_drops".into(), self.not_connected_drops),
                ("client_errors".into(), self.errors.load(Ordering::Relaxed)),
                ("do_work_calls".into(), self.do_work_calls),
            ]);
            c
        }

        fn info(&self) -> Info {
            Info::from([
                ("channel".into(), self.channel.clone()),
                ("media_driver".into(), self.placement.clone()),
                ("aeron".into(), Aeron::version_full().to_owned()),
                (
                    "max_message_length".into(),
                    self.max_message_length.to_string(),
                ),
            ])
        }
    }

    /// Where the fragment assembler hands each whole message.
    struct Sink<'a> {
        on_msg: &'a mut dyn FnMut(&[u8]),
        count: usize,
    }

    fn deliver(sink: &mut Sink<'_>, msg: &[u8], _header: AeronHeader) {
        (sink.on_msg)(msg);
        sink.count += 1;
    }

    struct AeronSubscriber {
        // Field order is drop order: subscription, client, driver, directory.
        subscription: AeronSubscription,
        assembler: AeronFragmentClosureAssembler,
        client: Aeron,
        /// UDP invoker mode: the subscriber process's own media driver (or, echo
        /// channel, the publisher process's).
        driver: Option<Rc<AeronDriver>>,
        _dir: Option<DirGuard>,
        invoker: bool,
        errors: Arc<AtomicU64>,
        channel: String,
        polls: u64,
        empty_polls: u64,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        refuse_aeron_env()?;
        let channel = channel(spec)?;
        let dir = aeron_dir(spec, false)?;
        let invoker = invoker(spec);
        let (driver, guard) = own_driver(spec, false, &dir, buffers())?;
        let (client, errors) = client(&dir, "sub", invoker)?;
        let pending = client
            .async_add_subscription(
                &channel.clone().into_c_string(),
                stream_id(spec),
                Handlers::NONE,
                Handlers::NONE,
            )
            .map_err(client_err("aeron add subscription"))?;
        let subscription = added(
            &client,
            driver.as_deref(),
            invoker,
            "aeron add subscription",
            || pending.poll(),
        )
        .with_context(|| format!("subscription on {channel}"))?;
        let assembler =
            AeronFragmentClosureAssembler::new().map_err(client_err("aeron fragment assembler"))?;
        Ok(Box::new(AeronSubscriber {
            subscription,
            assembler,
            client,
            driver,
            _dir: guard,
            invoker,
            errors,
            channel,
            polls: 0,
            empty_polls: 0,
        }))
    }

    impl AeronSubscriber {
        /// One duty cycle (invoker mode) and one poll of the subscription.
        fn poll_once(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            work(&self.client, self.driver.as_deref(), self.invoker)?;
            let mut sink = Sink {
                on_msg: &mut *on_msg,
                count: 0,
            };
            self.polls += 1;
            self.assembler
                .poll(&self.subscription, &mut sink, deliver, FRAGMENT_LIMIT)
                .map_err(client_err("aeron poll"))?;
            if sink.count == 0 {
                self.empty_polls += 1;
            }
            Ok(sink.count)
        }
    }

    /// Idle between empty polls: spin, then yield (the driver's receiver may share
    /// this core), then sleep with exponential backoff up to 1 ms.
    fn idle(round: u32) {
        match round {
            0..64 => std::hint::spin_loop(),
            64..320 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(1 << (round - 320).min(10))),
        }
    }

    impl Subscriber for AeronSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let deadline = Instant::now() + timeout;
            let mut round = 0u32;
            loop {
                let n = self.poll_once(on_msg)?;
                if n > 0 {
                    return Ok(n);
                }
                if Instant::now() >= deadline {
                    return Ok(0);
                }
                if self.invoker {
                    // The duty cycles run in this loop: never sleep long.
                    idle(round.min(319));
                } else {
                    idle(round);
                }
                round = round.saturating_add(1);
            }
        }

        fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            self.poll_once(on_msg)
        }

        fn counters(&self) -> Counters {
            Counters::from([
                ("polls".into(), self.polls),
                ("empty_polls".into(), self.empty_polls),
                ("client_errors".into(), self.errors.load(Ordering::Relaxed)),
            ])
        }

        fn info(&self) -> Info {
            Info::from([("channel".into(), self.channel.clone())])
        }
    }
}
