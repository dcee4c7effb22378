//! Topic matching in the receiver agent's dispatch: for each message, every subscription's
//! prefixes are tested (`topic_matches`, what `Subscription::matches` calls), with 1 and
//! with 1,000 subscriptions of which exactly one matches. One element = one message
//! matched against all subscriptions; delivery into the rings is not included.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringcast::__bench::topic_matches;

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic");
    g.throughput(Throughput::Elements(1));
    for subs in [1usize, 1000] {
        // One prefix per subscription, like `node.subscribe("/md/S0042/")`.
        let prefixes: Vec<Vec<String>> = (0..subs).map(|i| vec![format!("/md/S{i:04}/")]).collect();
        let topic = format!("/md/S{:04}/trade", subs - 1);
        let matching = |topic: &str| {
            prefixes
                .iter()
                .filter(|p| topic_matches(black_box(p), topic))
                .count()
        };
        g.bench_function(BenchmarkId::new("match_subscriptions", subs), |b| {
            b.iter(|| matching(black_box(&topic)))
        });
        assert_eq!(matching(&topic), 1);
        assert_eq!(matching("/other/trade"), 0);
    }
    g.finish();
}
