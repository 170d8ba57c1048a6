//! Aggregation invariants, checked on random sample sets: window means and summary statistics
//! equal a direct recomputation from the full list of samples, whatever the order samples are
//! added in and however they are split into partial accumulators merged together.
//!
//! Outputs and inputs are compared through their JSON form, so one path such as
//! `["video", "frame_rate"]` reads a field on both sides.

use proptest::prelude::*;
use qss_domain::num::round2;
use qss_domain::sample::{MediaMetrics, MeetingType, ParticipantMetrics, ParticipantQos};
use qss_domain::settings::Thresholds;
use qss_domain::timefmt::Millis;
use qss_engine::distribution::EXACT_CAP;
use qss_engine::{Distribution, MeetingSummaryAcc, ParticipantWindowAcc, SummaryCtx, WindowCtx};
use serde_json::Value;

const T0: Millis = 1_705_314_600_000;
const GROUPS: [&str; 3] = ["audio", "video", "screen_share"];
const FIELDS: [&str; 5] = ["bitrate", "latency", "jitter", "packet_loss", "frame_rate"];

/// Every number path of a participant's metrics.
fn number_paths() -> Vec<Vec<&'static str>> {
    let mut paths: Vec<Vec<&str>> = GROUPS
        .iter()
        .flat_map(|g| FIELDS.iter().map(move |f| vec![*g, *f]))
        .collect();
    paths.push(vec!["cpu_usage"]);
    paths
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| &v[*key])
}

/// A value in `0..=max`, often exactly 0 and often small, as real telemetry is.
fn value(max: f64) -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..=max.min(300.0), 0.0..=max]
}

fn media() -> impl Strategy<Value = MediaMetrics> {
    let resolution = prop::option::of(prop::sample::select(vec!["1280x720", "640x360", "320x180"]));
    (
        value(100_000.0),
        value(60_000.0),
        value(60_000.0),
        value(100.0),
        resolution,
        prop::option::of(value(240.0)),
    )
        .prop_map(
            |(bitrate, latency, jitter, packet_loss, resolution, frame_rate)| MediaMetrics {
                bitrate,
                latency,
                jitter,
                packet_loss,
                resolution: resolution.map(str::to_owned),
                frame_rate,
            },
        )
}

fn metrics() -> impl Strategy<Value = ParticipantMetrics> {
    let audio = media().prop_map(|mut m| {
        m.resolution = None;
        m.frame_rate = None;
        m
    });
    (
        prop::option::of(audio),
        prop::option::of(media()),
        prop::option::of(media()),
        prop::option::of(value(100.0)),
    )
        .prop_map(
            |(audio, video, screen_share, cpu_usage)| ParticipantMetrics {
                audio,
                video,
                screen_share,
                cpu_usage,
            },
        )
        // Validation requires at least one group.
        .prop_filter("at least one group", |m| {
            m.audio.is_some() || m.video.is_some() || m.screen_share.is_some()
        })
}

fn sample() -> impl Strategy<Value = ParticipantQos> {
    let names = prop::option::of(prop::sample::select(vec!["Ann", "Bob", "Cy"]));
    (
        0..4u8,
        // Few distinct timestamps, so that ties in "latest" are common.
        (0..12i64).prop_map(|i| T0 + i * 5000),
        names,
        prop::bool::ANY,
        metrics(),
    )
        .prop_map(|(p, timestamp, name, webinar, metrics)| ParticipantQos {
            meeting_id: "m1".into(),
            meeting_type: if webinar {
                MeetingType::Webinar
            } else {
                MeetingType::Meeting
            },
            participant_id: format!("p{p}"),
            user_id: name.map(|n| format!("id-{n}")),
            user_name: name.map(str::to_owned),
            timestamp,
            metrics,
        })
}

/// A sample set, the same set shuffled, and cut points splitting it into chunks.
fn arrangements() -> impl Strategy<Value = (Vec<ParticipantQos>, Vec<ParticipantQos>, Vec<usize>)> {
    prop::collection::vec(sample(), 1..60).prop_flat_map(|samples| {
        let n = samples.len();
        (
            Just(samples.clone()),
            Just(samples).prop_shuffle(),
            prop::collection::vec(0..=n, 0..6),
        )
    })
}

/// Splits at `cuts`, accumulates each chunk alone, and merges the chunks last to first.
fn chunked<A: Default>(
    samples: &[ParticipantQos],
    cuts: &[usize],
    add: impl Fn(&mut A, &ParticipantQos),
    merge: impl Fn(&mut A, &A),
) -> A {
    let mut cuts = cuts.to_vec();
    cuts.push(0);
    cuts.push(samples.len());
    cuts.sort_unstable();
    let chunks: Vec<A> = cuts
        .windows(2)
        .map(|w| {
            let mut acc = A::default();
            samples[w[0]..w[1]].iter().for_each(|s| add(&mut acc, s));
            acc
        })
        .collect();
    chunks.iter().rev().fold(A::default(), |mut all, c| {
        merge(&mut all, c);
        all
    })
}

fn window_of(samples: &[ParticipantQos]) -> ParticipantWindowAcc {
    let mut acc = ParticipantWindowAcc::new();
    samples.iter().for_each(|s| acc.add(s));
    acc
}

fn summary_of(samples: &[ParticipantQos]) -> MeetingSummaryAcc {
    let mut acc = MeetingSummaryAcc::new();
    samples.iter().for_each(|s| acc.add(s));
    acc
}

fn window_json(acc: &ParticipantWindowAcc) -> Value {
    let thresholds = Thresholds::default();
    let ctx = WindowCtx {
        meeting_id: "m1",
        meeting_instance_id: "mi1",
        meeting_type: "meeting",
        participant_id: "p0",
        window_start: T0,
        interval_seconds: 60,
        thresholds: &thresholds,
    };
    serde_json::to_value(acc.finish(&ctx)).unwrap()
}

fn summary_json(acc: &MeetingSummaryAcc) -> Value {
    let thresholds = Thresholds::default();
    let ctx = SummaryCtx {
        meeting_id: "m1",
        meeting_instance_id: "mi1",
        meeting_type: "meeting",
        end_time: acc.last_timestamp().unwrap(),
        thresholds: &thresholds,
    };
    serde_json::to_value(acc.finish(&ctx)).unwrap()
}

/// The values of one metric path over the samples that carry it.
fn values_at(samples: &[ParticipantQos], path: &[&str]) -> Vec<f64> {
    samples
        .iter()
        .filter_map(|s| at(&serde_json::to_value(&s.metrics).unwrap(), path).as_f64())
        .collect()
}

/// A payload mean may differ from the exact mean only by the 2-decimal rounding.
fn assert_rounded_mean(out: &Value, values: &[f64], what: &str) {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let got = out.as_f64().unwrap_or_else(|| panic!("{what} is missing"));
    assert!(
        (got - mean).abs() <= 0.005 + 1e-9 * mean.abs(),
        "{what}: {got} vs mean {mean}"
    );
}

fn nearest_rank(sorted: &[f64], n: usize) -> f64 {
    let rank = (n * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The most frequent resolution of a group; ties go to the latest sample, then the larger value.
fn expected_resolution(samples: &[ParticipantQos], group: &str) -> Value {
    let mut seen: Vec<(usize, Millis, String)> = Vec::new();
    for s in samples {
        let m = serde_json::to_value(&s.metrics).unwrap();
        let Some(r) = m[group]["resolution"].as_str() else {
            continue;
        };
        match seen.iter_mut().find(|e| e.2 == r) {
            Some(e) => {
                e.0 += 1;
                e.1 = e.1.max(s.timestamp);
            }
            None => seen.push((1, s.timestamp, r.to_owned())),
        }
    }
    seen.into_iter()
        .max()
        .map_or(Value::Null, |(_, _, r)| Value::String(r))
}

proptest! {
    #[test]
    fn window_means_do_not_depend_on_arrival_order((samples, shuffled, _) in arrangements()) {
        prop_assert_eq!(window_json(&window_of(&samples)), window_json(&window_of(&shuffled)));
    }

    #[test]
    fn a_window_merged_from_chunks_equals_the_window_fed_in_one_piece(
        (samples, shuffled, cuts) in arrangements()
    ) {
        let whole = window_of(&samples);
        let merged = chunked(&shuffled, &cuts, |a: &mut ParticipantWindowAcc, s| a.add(s), |a, b| a.merge(b));
        prop_assert_eq!(merged.sample_count(), samples.len() as u64);
        prop_assert_eq!(window_json(&whole), window_json(&merged));
    }

    #[test]
    fn window_means_equal_a_direct_recomputation((samples, _, _) in arrangements()) {
        let out = window_json(&window_of(&samples));
        prop_assert_eq!(out["sample_count"].as_u64(), Some(samples.len() as u64));
        for path in number_paths() {
            let values = values_at(&samples, &path);
            let got = at(&out["metrics"], &path);
            if values.is_empty() {
                prop_assert!(got.is_null(), "{:?} should be absent", path);
            } else {
                assert_rounded_mean(got, &values, &format!("{path:?}"));
            }
        }
        for group in GROUPS {
            let carried = samples.iter().any(|s| {
                !serde_json::to_value(&s.metrics).unwrap()[group].is_null()
            });
            prop_assert_eq!(carried, !out["metrics"][group].is_null());
            if carried {
                prop_assert_eq!(
                    &out["metrics"][group]["resolution"],
                    &expected_resolution(&samples, group)
                );
            }
        }
        let latest_name = samples
            .iter()
            .filter_map(|s| s.user_name.as_deref().map(|n| (s.timestamp, n)))
            .max()
            .map(|(_, n)| n);
        prop_assert_eq!(out["user_name"].as_str(), latest_name);
    }

    #[test]
    fn summaries_do_not_depend_on_arrival_order_or_chunking(
        (samples, shuffled, cuts) in arrangements()
    ) {
        let whole = summary_json(&summary_of(&samples));
        let merged = chunked(&shuffled, &cuts, |a: &mut MeetingSummaryAcc, s| a.add(s), |a, b| a.merge(b));
        prop_assert_eq!(whole, summary_json(&merged));
    }

    #[test]
    fn summary_statistics_equal_a_direct_recomputation((samples, _, _) in arrangements()) {
        let out = summary_json(&summary_of(&samples));
        prop_assert_eq!(out["sample_count"].as_u64(), Some(samples.len() as u64));
        let mut ids: Vec<&str> = samples.iter().map(|s| s.participant_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(out["participant_count"].as_u64(), Some(ids.len() as u64));
        let first = samples.iter().map(|s| s.timestamp).min().unwrap();
        let last = samples.iter().map(|s| s.timestamp).max().unwrap();
        prop_assert_eq!(out["duration_seconds"].as_i64(), Some((last - first) / 1000));

        for path in number_paths() {
            let mut values = values_at(&samples, &path);
            let stats = at(&out["metrics"], &path);
            if values.is_empty() {
                prop_assert!(stats.is_null(), "{:?} should be absent", path);
                continue;
            }
            values.sort_by(f64::total_cmp);
            let what = format!("{path:?}");
            assert_rounded_mean(&stats["avg"], &values, &what);
            prop_assert_eq!(stats["min"].as_f64(), Some(round2(values[0])), "{} min", what);
            prop_assert_eq!(stats["max"].as_f64(), Some(round2(values[values.len() - 1])), "{} max", what);
            prop_assert_eq!(stats["p50"].as_f64(), Some(round2(nearest_rank(&values, 50))), "{} p50", what);
            prop_assert_eq!(stats["p95"].as_f64(), Some(round2(nearest_rank(&values, 95))), "{} p95", what);
        }

        // A participant's summary MOS is that of its rounded means over the whole instance.
        let mut mos_sum = 0.0;
        for id in &ids {
            let own: Vec<ParticipantQos> =
                samples.iter().filter(|s| s.participant_id == *id).cloned().collect();
            mos_sum += window_json(&window_of(&own))["quality"]["mos"].as_f64().unwrap();
        }
        let mos_avg = out["quality"]["mos_avg"].as_f64().unwrap();
        prop_assert!((mos_avg - mos_sum / ids.len() as f64).abs() <= 0.005 + 1e-9);
        let counts = &out["quality"]["grade_counts"];
        let total: u64 = ["good", "fair", "poor", "bad"].iter().map(|g| counts[*g].as_u64().unwrap()).sum();
        prop_assert_eq!(total, ids.len() as u64);
    }
}

proptest! {
    // Each case holds thousands of values: fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn sketched_percentiles_stay_within_one_percent_and_do_not_depend_on_chunking(
        values in prop::collection::vec(prop_oneof![Just(0.0), 0.0..=300.0, 0.0..=100_000.0], EXACT_CAP + 1..3 * EXACT_CAP),
        cuts in prop::collection::vec(0..3 * EXACT_CAP, 0..6),
    ) {
        let mut whole = Distribution::new();
        values.iter().for_each(|&x| whole.add(x));
        prop_assert!(!whole.is_exact());

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(values.len())).collect();
        cuts.extend([0, values.len()]);
        cuts.sort_unstable();
        let mut merged = Distribution::new();
        for w in cuts.windows(2).rev() {
            let mut chunk = Distribution::new();
            values[w[0]..w[1]].iter().for_each(|&x| chunk.add(x));
            merged.merge(&chunk);
        }
        prop_assert_eq!(whole.stats(), merged.stats());

        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        prop_assert_eq!(whole.count(), values.len() as u64);
        prop_assert_eq!(whole.min(), Some(sorted[0]));
        prop_assert_eq!(whole.max(), Some(sorted[sorted.len() - 1]));
        for n in [1, 25, 50, 90, 95, 99, 100] {
            let exact = nearest_rank(&sorted, n as usize);
            let got = whole.percentile(n).unwrap();
            prop_assert!((got - exact).abs() <= 0.01 * exact, "p{}: {} vs {}", n, got, exact);
            if exact == 0.0 {
                prop_assert_eq!(got, 0.0);
            }
        }
    }
}
