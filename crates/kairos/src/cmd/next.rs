//! `kairos next EXPR`: future fire times of a cron expression, without a server.
//!
//! With `--exclude FILE` / `--only FILE` (calendar documents), the fire times are those the
//! calendars allow, as a trigger naming them would have, and the times they rule out between
//! them are listed too, each with why.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use jiff::Timestamp;
use kairos_core::calendar::{Calendar, CalendarFilter, CalendarNames};
use kairos_core::trigger::{CronSchedule, Schedule, Trigger, TriggerKind};
use serde_json::json;

pub struct NextArgs {
    pub expr: String,
    pub tz: Option<String>,
    pub from: Option<String>,
    pub count: usize,
    pub json: bool,
    /// Calendar files whose days and windows are not fire times.
    pub exclude: Vec<PathBuf>,
    /// Calendar files: when any, only fire times in one of them count.
    pub only: Vec<PathBuf>,
}

impl NextArgs {
    fn has_calendars(&self) -> bool {
        !self.exclude.is_empty() || !self.only.is_empty()
    }
}

/// One line of `kairos next`: a fire time, or a time the calendars rule out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// RFC 3339 with the offset of the expression's zone.
    pub local: String,
    pub utc: Timestamp,
    /// How daylight saving time moved or doubled it.
    pub note: Option<String>,
    /// Why it is not a fire time (`None`: it is one).
    pub skipped: Option<String>,
}

/// Formats an instant as RFC 3339 with the offset of `zone`.
fn rfc3339_in(t: Timestamp, schedule: &CronSchedule) -> String {
    t.to_zoned(schedule.time_zone().clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// The calendars of `--exclude` or `--only` files.
fn calendars(files: &[PathBuf], flag: &str) -> anyhow::Result<Vec<Arc<Calendar>>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let found = super::calendar::load_files(files, "default").map_err(|problems| {
        anyhow::anyhow!(super::calendar::problems_message(
            &format!("{flag}: invalid calendar file:"),
            &problems
        ))
    })?;
    Ok(found.into_iter().map(|(_, c)| Arc::new(c)).collect())
}

/// The lines `kairos next` prints (one per fire time, and with calendars one per time they
/// rule out, each starting with the timestamp).
pub fn lines(args: &NextArgs, now: Timestamp) -> anyhow::Result<Vec<Line>> {
    if args.count == 0 || args.count > 10_000 {
        bail!("-n: must be between 1 and 10000");
    }
    let schedule =
        CronSchedule::parse(&args.expr, args.tz.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let from = match &args.from {
        None => now,
        Some(s) => {
            kairos_core::job::parse_instant(s).map_err(|e| anyhow::anyhow!("--from: {e}"))?
        }
    };
    let mut out = Vec::with_capacity(args.count);
    if !args.has_calendars() {
        let mut cursor = from;
        while out.len() < args.count {
            let Some(next) = schedule.next_after(cursor) else {
                break;
            };
            out.push(Line {
                local: rfc3339_in(next, &schedule),
                utc: next,
                note: schedule.dst_note(next).map(|n| n.to_string()),
                skipped: None,
            });
            cursor = next;
        }
        return Ok(out);
    }
    let exclude = calendars(&args.exclude, "--exclude")?;
    let only = calendars(&args.only, "--only")?;
    let names = CalendarNames {
        exclude: exclude.iter().map(|c| c.name.clone()).collect(),
        only: only.iter().map(|c| c.name.clone()).collect(),
    };
    let trigger = Trigger {
        kind: TriggerKind::Cron(schedule.clone()),
        start_at: None,
        end_at: None,
        jitter: None,
        calendars: CalendarFilter {
            exclude,
            only,
            names,
        },
    };
    let preview = Schedule {
        triggers: vec![trigger],
    }
    .preview(from, args.count);
    for upcoming in preview {
        let note = match upcoming.skipped {
            None => schedule.dst_note(upcoming.at).map(|n| n.to_string()),
            Some(_) => None,
        };
        out.push(Line {
            local: rfc3339_in(upcoming.at, &schedule),
            utc: upcoming.at,
            note,
            skipped: upcoming.skipped,
        });
    }
    Ok(out)
}

/// The start instant as given (or now).
fn from_text(args: &NextArgs, now: Timestamp) -> String {
    args.from.clone().unwrap_or_else(|| now.to_string())
}

fn print_line(line: &Line) {
    match (&line.skipped, &line.note) {
        (Some(why), _) => println!("{} skipped: {why}", line.local),
        (None, Some(note)) => println!("{} {note}", line.local),
        (None, None) => println!("{}", line.local),
    }
}

pub fn run(args: NextArgs, now: Timestamp) -> anyhow::Result<()> {
    let lines = lines(&args, now)?;
    let fires = lines.iter().filter(|l| l.skipped.is_none()).count();
    // Fewer fire times than asked: none is left within the years Kairos computes (or that the
    // calendars allow). Saying nothing would look like success.
    let last = lines
        .iter()
        .rev()
        .find(|l| l.skipped.is_none())
        .map(|l| l.local.clone());
    let allowed = if args.has_calendars() {
        " that the calendars allow"
    } else {
        ""
    };
    let end_note = format!(
        "no fire times{allowed} after {}",
        last.unwrap_or_else(|| from_text(&args, now))
    );
    let horizon = kairos_core::trigger::CRON_LAST_YEAR;
    if fires == 0 {
        // The times the calendars ruled out, then why nothing else follows.
        if !args.json {
            for line in &lines {
                print_line(line);
            }
        }
        bail!("{end_note}: cron fire times are computed up to the year {horizon}");
    }
    if fires < args.count {
        eprintln!(
            "note: {end_note} up to the year {horizon} (only {fires} of {} shown)",
            args.count
        );
    }
    if args.json {
        let items: Vec<_> = lines
            .iter()
            .map(|l| {
                let mut item = json!({ "at": l.local, "utc": l.utc.to_string(), "note": l.note });
                if args.has_calendars() {
                    item["skipped"] = json!(l.skipped);
                }
                item
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    for line in &lines {
        print_line(line);
    }
    Ok(())
}
