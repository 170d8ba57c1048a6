//! Quality scoring (SPEC 5.5): the simplified E-model turning latency, jitter and loss into an
//! R-factor and a MOS, grades, and the issue tags of a window.
//!
//! Scoring always takes the *rounded* means of a window, and grades and `low_mos` use the
//! *rounded* MOS, so that a reader recomputing from the payload gets the payload (SPEC 5.2).

use qss_domain::Num;
use qss_domain::event::{GroupMeans, Issue, ParticipantMeans, Quality};
use qss_domain::settings::Thresholds;
use qss_domain::{event::Grade, num::round2};

/// R-factor clamped to [0, 100] and MOS clamped to [1, 4.5], unrounded.
///
/// The MOS comes from the unclamped R: the two differ only where MOS is pinned to 1 or 4.5 anyway,
/// but computing from the clamped value would hide that intent.
pub fn r_and_mos(latency: f64, jitter: f64, packet_loss: f64) -> (f64, f64) {
    let effective_latency = latency + 2.0 * jitter + 10.0;
    let mut r = if effective_latency < 160.0 {
        93.2 - effective_latency / 40.0
    } else {
        93.2 - (effective_latency - 120.0) / 10.0
    };
    r -= 2.5 * packet_loss;
    let mos = if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    };
    (r.clamp(0.0, 100.0), mos.clamp(1.0, 4.5))
}

/// The grade of a MOS (pass the rounded one): good ≥ 4.0, fair ≥ 3.6, poor ≥ 3.1, else bad.
pub fn grade(mos: f64) -> Grade {
    if mos >= 4.0 {
        Grade::Good
    } else if mos >= 3.6 {
        Grade::Fair
    } else if mos >= 3.1 {
        Grade::Poor
    } else {
        Grade::Bad
    }
}

/// The quality of a participant window from its rounded means.
///
/// The score comes from the audio group if the window has one, else video, else screen share.
/// A window with no group at all cannot come from validated samples (each carries at least one);
/// it is scored as a perfect network rather than panicking.
pub fn participant_quality(means: &ParticipantMeans, thresholds: &Thresholds) -> Quality {
    let all = [&means.audio, &means.video, &means.screen_share];
    let groups = || all.iter().filter_map(|g| g.as_ref());
    let scored = groups().next();
    let value = |f: fn(&GroupMeans) -> Option<Num>| scored.and_then(f).map_or(0.0, Num::get);
    let exceeds = |f: fn(&GroupMeans) -> Option<Num>, limit: f64| {
        groups().any(|g| f(g).is_some_and(|v| v.get() > limit))
    };

    let mut issues = network_issues(
        exceeds(|g| g.latency, thresholds.latency_ms),
        exceeds(|g| g.jitter, thresholds.jitter_ms),
        exceeds(|g| g.packet_loss, thresholds.packet_loss_pct),
    );
    if let Some(video) = &means.video {
        let low_rate = video
            .frame_rate
            .is_some_and(|fr| fr.get() < thresholds.frame_rate_fps);
        let sending = video.bitrate.is_some_and(|b| b.get() > 0.0);
        if low_rate && sending {
            issues.push(Issue::LowFrameRate);
        }
    }
    if means
        .cpu_usage
        .is_some_and(|cpu| cpu.get() > thresholds.cpu_usage_pct)
    {
        issues.push(Issue::HighCpu);
    }
    let latency = value(|g| g.latency);
    let jitter = value(|g| g.jitter);
    let loss = value(|g| g.packet_loss);
    score(latency, jitter, loss, issues, thresholds)
}

/// The quality of a phone-call window from its rounded means (SPEC 5.4): only the network tags
/// and `low_mos` apply.
pub fn call_quality(
    latency: f64,
    jitter: f64,
    packet_loss: f64,
    thresholds: &Thresholds,
) -> Quality {
    let issues = network_issues(
        latency > thresholds.latency_ms,
        jitter > thresholds.jitter_ms,
        packet_loss > thresholds.packet_loss_pct,
    );
    score(latency, jitter, packet_loss, issues, thresholds)
}

fn network_issues(high_latency: bool, high_jitter: bool, high_loss: bool) -> Vec<Issue> {
    [
        (high_latency, Issue::HighLatency),
        (high_jitter, Issue::HighJitter),
        (high_loss, Issue::HighPacketLoss),
    ]
    .into_iter()
    .filter_map(|(hit, issue)| hit.then_some(issue))
    .collect()
}

/// Scores and appends `low_mos`, the last tag in SPEC order, to the tags found so far.
fn score(
    latency: f64,
    jitter: f64,
    packet_loss: f64,
    mut issues: Vec<Issue>,
    thresholds: &Thresholds,
) -> Quality {
    let (r, mos) = r_and_mos(latency, jitter, packet_loss);
    let mos = round2(mos);
    if mos < thresholds.mos {
        issues.push(Issue::LowMos);
    }
    Quality {
        mos: Num(mos),
        r_factor: Num::rounded(r),
        grade: grade(mos),
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(bitrate: f64, latency: f64, jitter: f64, loss: f64) -> GroupMeans {
        GroupMeans {
            bitrate: Some(Num(bitrate)),
            latency: Some(Num(latency)),
            jitter: Some(Num(jitter)),
            packet_loss: Some(Num(loss)),
            ..GroupMeans::default()
        }
    }

    fn audio_only(latency: f64, jitter: f64, loss: f64) -> ParticipantMeans {
        ParticipantMeans {
            audio: Some(group(64.0, latency, jitter, loss)),
            ..ParticipantMeans::default()
        }
    }

    #[test]
    fn reference_values_of_the_spec_are_reproduced() {
        for (latency, jitter, loss, r, mos) in [
            (20.0, 2.0, 0.0, 92.35, 4.39),
            (100.0, 10.0, 1.0, 87.45, 4.27),
            (150.0, 40.0, 2.0, 76.20, 3.87),
            (300.0, 40.0, 5.0, 53.70, 2.77),
            (400.0, 60.0, 10.0, 27.20, 1.50),
        ] {
            let (got_r, got_mos) = r_and_mos(latency, jitter, loss);
            assert_eq!(round2(got_r), r, "R of ({latency}, {jitter}, {loss})");
            assert_eq!(round2(got_mos), mos, "MOS of ({latency}, {jitter}, {loss})");
        }
    }

    #[test]
    fn r_and_mos_are_clamped() {
        assert_eq!(r_and_mos(60_000.0, 60_000.0, 100.0), (0.0, 1.0));
        // Small positive R: the polynomial dips below 1 and is clamped up.
        let (r, mos) = r_and_mos(0.0, 0.0, 36.0);
        assert!(r > 0.0 && r < 5.0);
        assert_eq!(mos, 1.0);
    }

    #[test]
    fn grades_include_their_lower_bound() {
        for (mos, expected) in [
            (4.5, Grade::Good),
            (4.0, Grade::Good),
            (3.99, Grade::Fair),
            (3.6, Grade::Fair),
            (3.59, Grade::Poor),
            (3.1, Grade::Poor),
            (3.09, Grade::Bad),
            (1.0, Grade::Bad),
        ] {
            assert_eq!(grade(mos), expected, "grade({mos})");
        }
    }

    #[test]
    fn the_example_of_the_spec_scores_as_written() {
        let mut video = group(1500.0, 60.0, 15.0, 0.2);
        video.frame_rate = Some(Num(30.0));
        video.resolution = Some("1280x720".into());
        let means = ParticipantMeans {
            audio: Some(group(64.0, 50.0, 10.0, 0.5)),
            video: Some(video),
            screen_share: None,
            cpu_usage: Some(Num(25.0)),
        };
        let q = participant_quality(&means, &Thresholds::default());
        assert_eq!(q.mos, Num(4.34));
        assert_eq!(q.r_factor, Num(89.95));
        assert_eq!(q.grade, Grade::Good);
        assert!(q.issues.is_empty());
    }

    #[test]
    fn audio_is_scored_before_video_and_video_before_screen_share() {
        let bad = group(100.0, 400.0, 60.0, 10.0);
        let good = group(100.0, 20.0, 2.0, 0.0);
        let t = Thresholds::default();
        let with = |audio: Option<GroupMeans>, video, screen_share| ParticipantMeans {
            audio,
            video,
            screen_share,
            cpu_usage: None,
        };
        let q = participant_quality(&with(Some(good.clone()), Some(bad.clone()), None), &t);
        assert_eq!(q.mos, Num(4.39));
        let q = participant_quality(&with(None, Some(good.clone()), Some(bad.clone())), &t);
        assert_eq!(q.mos, Num(4.39));
        let q = participant_quality(&with(None, None, Some(bad)), &t);
        assert_eq!(q.mos, Num(1.5));
    }

    #[test]
    fn each_issue_is_raised_by_its_own_threshold() {
        use Issue::*;
        let t = Thresholds::default();
        let issues = |m: ParticipantMeans| participant_quality(&m, &t).issues;

        assert_eq!(issues(audio_only(150.0, 40.0, 2.0)), vec![]);
        assert_eq!(issues(audio_only(150.01, 0.0, 0.0)), vec![HighLatency]);
        assert_eq!(issues(audio_only(0.0, 40.01, 0.0)), vec![HighJitter]);
        assert_eq!(issues(audio_only(0.0, 0.0, 2.01)), vec![HighPacketLoss]);

        // Any group's mean counts, not only the scored one.
        let mut m = audio_only(10.0, 1.0, 0.0);
        m.screen_share = Some(group(500.0, 200.0, 1.0, 0.0));
        assert_eq!(issues(m), vec![HighLatency]);

        let mut video = group(800.0, 10.0, 1.0, 0.0);
        video.frame_rate = Some(Num(14.99));
        let mut m = audio_only(10.0, 1.0, 0.0);
        m.video = Some(video.clone());
        assert_eq!(issues(m.clone()), vec![LowFrameRate]);
        // A paused video (bitrate 0) is not a low frame rate.
        video.bitrate = Some(Num(0.0));
        m.video = Some(video);
        assert_eq!(issues(m), vec![]);

        let mut m = audio_only(10.0, 1.0, 0.0);
        m.cpu_usage = Some(Num(80.01));
        assert_eq!(issues(m), vec![HighCpu]);

        // 300/40/5 scores 2.77 and trips every network tag, in SPEC order.
        assert_eq!(
            issues(audio_only(300.0, 41.0, 5.0)),
            vec![HighLatency, HighJitter, HighPacketLoss, LowMos]
        );
    }

    #[test]
    fn low_mos_compares_the_rounded_mos_with_the_threshold() {
        // 150/40/2 scores 3.873..., rounded 3.87.
        let t = Thresholds {
            mos: 3.87,
            ..Thresholds::default()
        };
        assert!(
            !call_quality(150.0, 40.0, 2.0, &t)
                .issues
                .contains(&Issue::LowMos)
        );
        let t = Thresholds { mos: 3.88, ..t };
        assert_eq!(
            call_quality(150.0, 40.0, 2.0, &t).issues,
            vec![Issue::LowMos]
        );
    }

    #[test]
    fn call_quality_uses_only_network_and_mos_tags() {
        let q = call_quality(300.0, 40.0, 5.0, &Thresholds::default());
        assert_eq!(q.mos, Num(2.77));
        assert_eq!(q.r_factor, Num(53.7));
        assert_eq!(q.grade, Grade::Bad);
        assert_eq!(
            q.issues,
            vec![Issue::HighLatency, Issue::HighPacketLoss, Issue::LowMos]
        );
    }
}
