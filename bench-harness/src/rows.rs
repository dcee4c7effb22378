//! Result rows: one per measured run ("rep") and one per configuration over its
//! repetitions ("median", with min–max ranges). The `results.json` schema.

use crate::runner::Outcome;
use crate::spec::{Mode, Wait};
use crate::stats::{self, Latency, Spread};
use crate::systems::{Counters, Info};
use serde::{Deserialize, Serialize};

/// Which kind of row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    /// One measured repetition.
    Rep,
    /// Median over the repetitions of one configuration.
    Median,
}

/// Status of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Complete, verified delivery (and rate met, in rate mode).
    Ok,
    /// Lost messages in a run of a system that may lose them (reported, not failed).
    Lossy,
    /// Lost/corrupted/duplicated where that is not allowed, rate not met, or broke.
    Failed,
}

/// Min–max over repetitions, for median rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ranges {
    pub sender_msgs_per_sec: Option<[f64; 2]>,
    pub receiver_msgs_per_sec: Option<[f64; 2]>,
    pub lost: [u64; 2],
    pub latency_ns_min: Option<Latency>,
    pub latency_ns_max: Option<Latency>,
}

/// One row of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub row: RowKind,
    /// Repetition index (rep rows) or `null` (median rows).
    pub rep: Option<u32>,
    /// Repetitions behind this row (1 for rep rows).
    pub reps: u32,
    pub system: String,
    pub variant: String,
    pub transport: String,
    pub mode: String,
    pub messages: u64,
    pub size: usize,
    /// Offered rate in msg/s (rate and rtt mode), else `null`.
    pub rate: Option<u64>,
    /// Rate mode: how the publisher waited for its send times (`spin`, `sleep`); else `null`.
    pub wait: Option<String>,
    pub sender_msgs_per_sec: Option<f64>,
    pub receiver_msgs_per_sec: Option<f64>,
    /// messages / (first send → return of the publisher's final flush/drain).
    pub sender_flushed_msgs_per_sec: Option<f64>,
    /// receiver / sender.
    pub ratio: Option<f64>,
    /// Counted messages never delivered intact (verified: expected - unique verified).
    pub lost: u64,
    pub received: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub reordered: u64,
    pub lossless_expected: bool,
    pub failed: bool,
    pub status: Status,
    pub reasons: Vec<String>,
    /// One-way latency (full, rate, count-sweep) or round-trip time (rtt).
    pub latency_ns: Option<Latency>,
    /// CPU time (user + system, all threads, `getrusage`) of the publisher and the
    /// subscriber process over the measured part, per verified delivery, and their sum.
    pub cpu_ns_per_msg_pub: Option<f64>,
    pub cpu_ns_per_msg_sub: Option<f64>,
    pub cpu_ns_per_msg: Option<f64>,
    /// Rate mode: the part of `cpu_ns_per_msg_pub` the harness's pacing loop spent
    /// spinning or yielding for send times (a lower bound, see `PubReport`).
    #[serde(default)]
    pub cpu_ns_per_msg_pacing: Option<f64>,
    /// `cpu_ns_per_msg` less the pacing loop's part: what the system cost (an upper
    /// bound); equal to `cpu_ns_per_msg` outside rate mode.
    #[serde(default)]
    pub cpu_ns_per_msg_net: Option<f64>,
    /// Median rows: min–max over the repetitions.
    pub range: Option<Ranges>,
    /// HdrHistogram V2 files (relative to the output directory).
    pub hdr: Vec<String>,
    /// Counters reported by the publisher and subscriber side.
    pub sender_counters: Counters,
    pub receiver_counters: Counters,
    /// Facts reported by the sides (e.g. `receiver.backend`).
    pub info: Info,
    /// Rate mode: the achieved sending rate and worst lag behind schedule.
    pub achieved_rate: Option<f64>,
    pub max_behind_ns: Option<u64>,
}

impl Row {
    /// `system/transport/variant`.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.system, self.transport, self.variant)
    }

    /// `system/transport/variant`, with `[wait]` for rate-mode rows.
    pub fn label_wait(&self) -> String {
        match &self.wait {
            Some(w) => format!("{} [{w}]", self.label()),
            None => self.label(),
        }
    }

    /// Rows with equal keys are repetitions of one configuration.
    pub fn key(&self) -> RowKey {
        (
            self.label_wait(),
            self.mode.clone(),
            self.messages,
            self.size,
            self.rate,
        )
    }
}

/// Identity of a configuration: label (with wait style), mode, messages, size, rate.
pub type RowKey = (String, String, u64, usize, Option<u64>);

/// A run in rate mode fails when it sent slower than this share of the offered rate.
pub const RATE_TOLERANCE: f64 = 0.95;

/// Turn one run's outcome into a rep row.
pub fn rep_row(o: &Outcome, hdr_rel: &str) -> Row {
    let spec = &o.spec;
    let rtt = spec.mode == Mode::Rtt;
    // A round trip's deliveries are the verified pongs back at the publisher; the
    // subscriber's own tally (the pings) still counts for corruption and duplicates.
    let sub_tally = o.sub.as_ref().map(|s| s.tally.clone()).unwrap_or_default();
    let tally = if rtt {
        o.publ
            .as_ref()
            .and_then(|p| p.rtt.clone())
            .unwrap_or_default()
    } else {
        sub_tally.clone()
    };
    let expected = spec.messages;
    let received = tally.received;
    let lost = match (
        rtt,
        o.sub.is_some(),
        o.publ.as_ref().and_then(|p| p.rtt.as_ref()),
    ) {
        (false, true, _) | (true, _, Some(_)) => tally.lost(),
        _ => expected,
    };
    let sender = o
        .publ
        .as_ref()
        .and_then(|p| stats::rate(p.sent, p.first_send_ns, p.last_send_ns));
    let receiver = match (tally.first_recv_ns, tally.last_recv_ns) {
        (Some(a), Some(b)) => stats::rate(received, a, b),
        _ => None,
    };
    let mut reasons = Vec::new();
    if let Some(e) = &o.error {
        reasons.push(e.clone());
    }
    if o.publ.is_none() && o.error.is_none() {
        reasons.push("no publisher report".into());
    }
    if received == 0 {
        reasons.push("nothing delivered".into());
    }
    if lost > 0 && spec.variant.lossless_expected {
        reasons.push(format!("lost {lost} of {expected} in a lossless run"));
    }
    if tally.corrupted > 0 {
        reasons.push(format!("{} corrupted", tally.corrupted));
    }
    if tally.duplicated > 0 {
        reasons.push(format!("{} duplicated", tally.duplicated));
    }
    if rtt && sub_tally.corrupted > 0 {
        reasons.push(format!("{} pings corrupted", sub_tally.corrupted));
    }
    if rtt && sub_tally.duplicated > 0 {
        reasons.push(format!("{} pings duplicated", sub_tally.duplicated));
    }
    let mut achieved_rate = None;
    if let (Mode::Rate | Mode::Rtt, Some(offered), Some(p)) =
        (spec.mode, spec.rate, o.publ.as_ref())
    {
        achieved_rate = stats::rate(p.sent, p.first_send_ns, p.last_send_ns);
        if !matches!(achieved_rate, Some(a) if a >= RATE_TOLERANCE * offered as f64) {
            reasons.push(format!(
                "rate not met: {:.0} of {offered} msg/s",
                achieved_rate.unwrap_or(0.0)
            ));
        }
    }
    let pacing = o.publ.as_ref().and_then(|p| p.pacing_cpu_ns);
    let total_cpu = match (
        o.publ.as_ref().and_then(|p| p.cpu_ns),
        o.sub.as_ref().and_then(|s| s.cpu_ns),
    ) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    let failed = !reasons.is_empty();
    let status = if failed {
        Status::Failed
    } else if lost > 0 {
        reasons.push(format!("lost {lost} (lossy-allowed)"));
        Status::Lossy
    } else {
        Status::Ok
    };
    Row {
        row: RowKind::Rep,
        rep: Some(spec.rep),
        reps: 1,
        system: spec.variant.system.clone(),
        variant: spec.variant.variant.clone(),
        transport: spec.variant.transport.clone(),
        mode: spec.mode.as_str().to_owned(),
        messages: expected,
        size: spec.size,
        rate: spec.rate,
        wait: (spec.mode == Mode::Rate)
            .then(|| spec.wait.unwrap_or(Wait::Spin).as_str().to_owned()),
        sender_msgs_per_sec: sender,
        receiver_msgs_per_sec: receiver,
        sender_flushed_msgs_per_sec: o
            .publ
            .as_ref()
            .and_then(|p| stats::rate(p.sent, p.first_send_ns, p.finished_ns)),
        ratio: stats::ratio(receiver, sender),
        lost,
        received,
        duplicated: tally.duplicated,
        corrupted: tally.corrupted,
        reordered: tally.reordered,
        lossless_expected: spec.variant.lossless_expected,
        failed,
        status,
        reasons,
        latency_ns: o.hist.as_ref().and_then(Latency::from_histogram),
        cpu_ns_per_msg_pub: per_msg(o.publ.as_ref().and_then(|p| p.cpu_ns), received),
        cpu_ns_per_msg_sub: per_msg(o.sub.as_ref().and_then(|s| s.cpu_ns), received),
        cpu_ns_per_msg: total_cpu.and_then(|t| per_msg(Some(t), received)),
        cpu_ns_per_msg_pacing: per_msg(pacing, received),
        cpu_ns_per_msg_net: total_cpu
            .and_then(|t| per_msg(Some(t.saturating_sub(pacing.unwrap_or(0))), received)),
        range: None,
        hdr: if o.hist.is_some() {
            vec![hdr_rel.to_owned()]
        } else {
            Vec::new()
        },
        sender_counters: o
            .publ
            .as_ref()
            .map(|p| p.counters.clone())
            .unwrap_or_default(),
        receiver_counters: o
            .sub
            .as_ref()
            .map(|s| s.counters.clone())
            .unwrap_or_default(),
        info: side_info(o),
        achieved_rate,
        max_behind_ns: o
            .publ
            .as_ref()
            .filter(|_| matches!(spec.mode, Mode::Rate | Mode::Rtt))
            .map(|p| p.max_behind_ns),
    }
}

/// CPU nanoseconds per verified delivery.
fn per_msg(cpu_ns: Option<u64>, delivered: u64) -> Option<f64> {
    match cpu_ns {
        Some(c) if delivered > 0 => Some(c as f64 / delivered as f64),
        _ => None,
    }
}

/// Facts from both sides, keyed `sender.*` / `receiver.*`.
fn side_info(o: &Outcome) -> Info {
    let mut info = Info::new();
    for (k, v) in o.publ.iter().flat_map(|p| p.info.iter()) {
        info.insert(format!("sender.{k}"), v.clone());
    }
    for (k, v) in o.sub.iter().flat_map(|s| s.info.iter()) {
        info.insert(format!("receiver.{k}"), v.clone());
    }
    info
}

/// Median rows over the repetitions in `reps`, in first-seen order.
pub fn medians(reps: &[Row]) -> Vec<Row> {
    let mut keys = Vec::new();
    for r in reps {
        if !keys.contains(&r.key()) {
            keys.push(r.key());
        }
    }
    keys.iter()
        .map(|k| {
            let group: Vec<&Row> = reps.iter().filter(|r| &r.key() == k).collect();
            median_row(&group)
        })
        .collect()
}

fn median_row(group: &[&Row]) -> Row {
    let first = group[0];
    let spread = |f: fn(&Row) -> Option<f64>| Spread::of(group.iter().filter_map(|r| f(r)));
    let send = spread(|r| r.sender_msgs_per_sec);
    let recv = spread(|r| r.receiver_msgs_per_sec);
    let u = |f: fn(&Row) -> u64| -> Vec<f64> { group.iter().map(|r| f(r) as f64).collect() };
    let med_u = |f: fn(&Row) -> u64| stats::median(&u(f)).round() as u64;
    let lats: Vec<Latency> = group.iter().filter_map(|r| r.latency_ns).collect();
    let lat = |f: fn(&[f64]) -> f64| (!lats.is_empty()).then(|| Latency::combine(&lats, f));
    let failed = group.iter().any(|r| r.failed);
    let lost = med_u(|r| r.lost);
    let status = if failed {
        Status::Failed
    } else if group.iter().any(|r| r.status == Status::Lossy) {
        Status::Lossy
    } else {
        Status::Ok
    };
    let mut reasons: Vec<String> = Vec::new();
    for r in group {
        for reason in &r.reasons {
            let tagged = format!("rep {}: {reason}", r.rep.unwrap_or(0));
            reasons.push(tagged);
        }
    }
    let achieved = Spread::of(group.iter().filter_map(|r| r.achieved_rate));
    Row {
        row: RowKind::Median,
        rep: None,
        reps: group.len() as u32,
        sender_msgs_per_sec: send.map(|s| s.median),
        receiver_msgs_per_sec: recv.map(|s| s.median),
        sender_flushed_msgs_per_sec: spread(|r| r.sender_flushed_msgs_per_sec).map(|s| s.median),
        ratio: stats::ratio(recv.map(|s| s.median), send.map(|s| s.median)),
        lost,
        received: med_u(|r| r.received),
        duplicated: med_u(|r| r.duplicated),
        corrupted: med_u(|r| r.corrupted),
        reordered: med_u(|r| r.reordered),
        failed,
        status,
        reasons,
        latency_ns: lat(stats::median),
        cpu_ns_per_msg_pub: spread(|r| r.cpu_ns_per_msg_pub).map(|s| s.median),
        cpu_ns_per_msg_sub: spread(|r| r.cpu_ns_per_msg_sub).map(|s| s.median),
        cpu_ns_per_msg: spread(|r| r.cpu_ns_per_msg).map(|s| s.median),
        cpu_ns_per_msg_pacing: spread(|r| r.cpu_ns_per_msg_pacing).map(|s| s.median),
        cpu_ns_per_msg_net: spread(|r| r.cpu_ns_per_msg_net).map(|s| s.median),
        range: Some(Ranges {
            sender_msgs_per_sec: send.map(|s| [s.min, s.max]),
            receiver_msgs_per_sec: recv.map(|s| [s.min, s.max]),
            lost: [
                stats::min(&u(|r| r.lost)) as u64,
                stats::max(&u(|r| r.lost)) as u64,
            ],
            latency_ns_min: lat(stats::min),
            latency_ns_max: lat(stats::max),
        }),
        hdr: group.iter().flat_map(|r| r.hdr.clone()).collect(),
        sender_counters: Counters::new(),
        receiver_counters: Counters::new(),
        achieved_rate: achieved.map(|s| s.median),
        max_behind_ns: group.iter().filter_map(|r| r.max_behind_ns).max(),
        ..first.clone()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn row(rep: u32, send: f64, recv: f64, lost: u64, p50: f64) -> Row {
        Row {
            row: RowKind::Rep,
            rep: Some(rep),
            reps: 1,
            system: "udp".into(),
            variant: "default".into(),
            transport: "udp-multicast".into(),
            mode: "full".into(),
            messages: 1000,
            size: 1024,
            rate: None,
            wait: None,
            sender_msgs_per_sec: Some(send),
            receiver_msgs_per_sec: Some(recv),
            sender_flushed_msgs_per_sec: Some(send),
            ratio: Some(recv / send),
            lost,
            received: 1000 - lost,
            duplicated: 0,
            corrupted: 0,
            reordered: 0,
            lossless_expected: false,
            failed: false,
            status: if lost > 0 { Status::Lossy } else { Status::Ok },
            reasons: Vec::new(),
            latency_ns: Some(Latency {
                p50,
                max: p50 * 10.0,
                ..Latency::default()
            }),
            cpu_ns_per_msg_pub: Some(1_000.0 * (rep + 1) as f64),
            cpu_ns_per_msg_sub: Some(500.0),
            cpu_ns_per_msg: Some(1_000.0 * (rep + 1) as f64 + 500.0),
            cpu_ns_per_msg_pacing: None,
            cpu_ns_per_msg_net: Some(1_000.0 * (rep + 1) as f64 + 500.0),
            range: None,
            hdr: vec![format!("r{rep}.hdr")],
            sender_counters: Counters::new(),
            receiver_counters: Counters::new(),
            info: Info::new(),
            achieved_rate: None,
            max_behind_ns: None,
        }
    }

    #[test]
    fn median_rows_over_reps() {
        let mut reps = vec![
            row(0, 100.0, 90.0, 0, 10.0),
            row(1, 300.0, 80.0, 7, 30.0),
            row(2, 200.0, 70.0, 2, 20.0),
        ];
        let mut other = row(0, 1.0, 1.0, 0, 1.0);
        other.variant = "mmsg".into();
        reps.push(other);
        let m = medians(&reps);
        assert_eq!(m.len(), 2);
        let a = &m[0];
        assert_eq!(a.row, RowKind::Median);
        assert_eq!(a.reps, 3);
        assert_eq!(a.sender_msgs_per_sec, Some(200.0));
        assert_eq!(a.receiver_msgs_per_sec, Some(80.0));
        assert_eq!(a.ratio, Some(0.4));
        assert_eq!(a.lost, 2);
        assert_eq!(a.status, Status::Lossy);
        let r = a.range.as_ref().unwrap();
        assert_eq!(r.sender_msgs_per_sec, Some([100.0, 300.0]));
        assert_eq!(r.receiver_msgs_per_sec, Some([70.0, 90.0]));
        assert_eq!(r.lost, [0, 7]);
        assert_eq!(a.latency_ns.unwrap().p50, 20.0);
        assert_eq!(r.latency_ns_max.unwrap().max, 300.0);
        assert_eq!(a.hdr.len(), 3);
        assert_eq!(a.cpu_ns_per_msg_pub, Some(2_000.0));
        assert_eq!(a.cpu_ns_per_msg, Some(2_500.0));
        assert_eq!(m[1].reps, 1);
        assert_eq!(m[1].variant, "mmsg");
    }

    fn outcome(lossless: bool, mode: Mode, received: &[u64], sent_ns: u64) -> Outcome {
        use crate::child::{PubReport, SubReport};
        use crate::message::{Decoded, Pattern};
        use crate::verify::Tracker;
        let mut variant = crate::systems::udp::variants().remove(0);
        variant.lossless_expected = lossless;
        let spec = crate::spec::RunSpec {
            id: "t".into(),
            rep: 0,
            variant,
            mode,
            messages: 10,
            size: 64,
            rate: (mode == Mode::Rate || mode == Mode::Rtt).then_some(10),
            wait: None,
            endpoint: crate::spec::Endpoint {
                group: "239.255.0.1:40000".parse().unwrap(),
                iface: std::net::Ipv4Addr::LOCALHOST,
                tcp: "127.0.0.1:1".parse().unwrap(),
                ipc: "/nonexistent".into(),
                back_group: "239.255.0.2:40001".parse().unwrap(),
                back_tcp: "127.0.0.1:2".parse().unwrap(),
                back_ipc: "/nonexistent-echo".into(),
            },
            pub_core: None,
            sub_core: None,
            hdr_path: "/nonexistent".into(),
            warmup_interval_us: 1,
            quiet_ms: 1,
            echo: false,
        };
        // Deliveries at t = 1 s + seq ms; one corrupt message in between.
        let mut t = Tracker::new(10);
        let p = Pattern::new(64);
        let mut buf = vec![0u8; 64];
        for &seq in received {
            p.fill(&mut buf, seq, 0);
            t.on_message(p.decode(&buf), 1_000_000_000 + seq * 1_000_000);
        }
        t.on_message(Decoded::Corrupt, 2_000_000_000);
        Outcome {
            spec,
            publ: Some(PubReport {
                sent: 10,
                first_send_ns: 0,
                last_send_ns: sent_ns,
                ..PubReport::default()
            }),
            sub: Some(SubReport {
                tally: t.tally().clone(),
                stopped: "quiet".into(),
                cpu_ns: None,
                counters: Counters::new(),
                info: Info::new(),
            }),
            hist: None,
            error: None,
            wall: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn rep_row_counts_loss_and_rates() {
        // 0..=9 without 4 and 7, plus a duplicate of 2.
        let got = [0, 1, 2, 2, 3, 5, 6, 8, 9];
        let r = rep_row(&outcome(false, Mode::Full, &got, 1_000_000_000), "x.hdr");
        assert_eq!(
            (r.received, r.lost, r.duplicated, r.corrupted),
            (8, 2, 1, 1)
        );
        // 10 messages sent in 1 s; 8 received between t=1.000 s and t=1.009 s.
        assert_eq!(r.sender_msgs_per_sec, Some(10.0));
        assert!((r.receiver_msgs_per_sec.unwrap() - 8.0 / 0.009).abs() < 1e-6);
        // Corruption and duplicates fail even a lossy-allowed run.
        assert!(r.failed);
        assert!(r.reasons.iter().any(|x| x.contains("corrupted")));

        let all: Vec<u64> = (0..10).collect();
        let ok = rep_row(&outcome(true, Mode::Full, &all, 1_000_000_000), "x.hdr");
        assert_eq!(ok.lost, 0);
        assert_eq!(ok.received, 10);
        // The corrupt extra message still fails it.
        assert!(ok.failed);
    }

    #[test]
    fn loss_policy_and_rate_check() {
        let some: Vec<u64> = (0..8).collect();
        let mut o = outcome(true, Mode::Full, &some, 1_000_000_000);
        o.sub.as_mut().unwrap().tally.corrupted = 0;
        let r = rep_row(&o, "x.hdr");
        assert_eq!(r.lost, 2);
        assert_eq!(r.status, Status::Failed);
        o.spec.variant.lossless_expected = false;
        let r = rep_row(&o, "x.hdr");
        assert_eq!(r.status, Status::Lossy);
        assert!(!r.failed);
        // Rate mode: 10 msg/s offered, 10 sent over 1 s is met; over 2 s is not.
        let all: Vec<u64> = (0..10).collect();
        let mut o = outcome(false, Mode::Rate, &all, 1_000_000_000);
        o.sub.as_mut().unwrap().tally.corrupted = 0;
        assert_eq!(rep_row(&o, "x.hdr").status, Status::Ok);
        o.publ.as_mut().unwrap().last_send_ns = 2_000_000_000;
        let r = rep_row(&o, "x.hdr");
        assert!(r.failed);
        assert!(r.reasons[0].starts_with("rate not met"));
        // No subscriber report: everything counts as lost.
        o.sub = None;
        assert_eq!(rep_row(&o, "x.hdr").lost, 10);
    }

    #[test]
    fn round_trip_rows_count_the_pongs_and_cpu_per_message() {
        // The subscriber saw all 10 pings; only 8 pongs came back verified.
        let all: Vec<u64> = (0..10).collect();
        let mut o = outcome(true, Mode::Rtt, &all, 1_000_000_000);
        o.sub.as_mut().unwrap().tally.corrupted = 0;
        let mut pongs = crate::verify::Tracker::new(10);
        let p = crate::message::Pattern::new(64);
        let mut buf = vec![0u8; 64];
        for seq in 0..8 {
            p.fill(&mut buf, seq, 0);
            pongs.on_message(p.decode(&buf), 1_000 + seq);
        }
        let publ = o.publ.as_mut().unwrap();
        publ.rtt = Some(pongs.tally().clone());
        publ.cpu_ns = Some(8_000);
        o.sub.as_mut().unwrap().cpu_ns = Some(4_000);
        let r = rep_row(&o, "x.hdr");
        assert_eq!((r.received, r.lost), (8, 2));
        assert_eq!(r.mode, "rtt");
        assert_eq!(r.wait, None);
        assert!(r.failed, "a lossless run lost pongs");
        assert_eq!(r.cpu_ns_per_msg_pub, Some(1_000.0));
        assert_eq!(r.cpu_ns_per_msg_sub, Some(500.0));
        assert_eq!(r.cpu_ns_per_msg, Some(1_500.0));
        assert_eq!(
            r.cpu_ns_per_msg_net,
            Some(1_500.0),
            "no pacing loop to take off"
        );
        assert_eq!(r.cpu_ns_per_msg_pacing, None);
        // Without the publisher's pong tally everything counts as lost.
        o.publ.as_mut().unwrap().rtt = None;
        assert_eq!(rep_row(&o, "x.hdr").lost, 10);
    }

    #[test]
    fn rate_rows_take_the_pacing_loop_off_the_cpu() {
        let all: Vec<u64> = (0..10).collect();
        let mut o = outcome(true, Mode::Rate, &all, 1_000_000_000);
        o.sub.as_mut().unwrap().cpu_ns = Some(3_000);
        let publ = o.publ.as_mut().unwrap();
        publ.cpu_ns = Some(100_000);
        publ.pacing_cpu_ns = Some(90_000);
        let r = rep_row(&o, "x.hdr");
        assert_eq!(r.cpu_ns_per_msg, Some(10_300.0));
        assert_eq!(r.cpu_ns_per_msg_pacing, Some(9_000.0));
        assert_eq!(r.cpu_ns_per_msg_net, Some(1_300.0));
        // A pacing estimate above the process's CPU never makes it negative.
        o.publ.as_mut().unwrap().pacing_cpu_ns = Some(200_000);
        assert_eq!(rep_row(&o, "x.hdr").cpu_ns_per_msg_net, Some(0.0));
    }

    #[test]
    fn wait_style_is_part_of_the_configuration() {
        let mut a = row(0, 1.0, 1.0, 0, 1.0);
        a.mode = "rate".into();
        a.wait = Some("spin".into());
        let mut b = a.clone();
        b.wait = Some("sleep".into());
        let m = medians(&[a, b]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].label_wait(), "udp/udp-multicast/default [sleep]");
    }

    #[test]
    fn one_failed_rep_fails_the_median() {
        let mut b = row(1, 1.0, 1.0, 0, 1.0);
        b.failed = true;
        b.status = Status::Failed;
        b.reasons = vec!["boom".into()];
        let m = medians(&[row(0, 1.0, 1.0, 0, 1.0), b]);
        assert!(m[0].failed);
        assert_eq!(m[0].status, Status::Failed);
        assert_eq!(m[0].reasons, vec!["rep 1: boom".to_owned()]);
    }
}
