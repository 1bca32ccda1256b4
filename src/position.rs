//! Delivery positions and the recovery rules (SPEC 5.3, 5.8, 8.5), in one place and
//! without I/O: where a node's delivery of a numbered channel stands, what an
//! arriving publication is to it (next, duplicate, gap, another history, a reused
//! offset), whether a page read from history can fill a gap, and whether a client's
//! `since` can be recovered. The hub, the node and the Redis path all ask here.

use std::sync::Arc;

use crate::protocol::Publication;

/// Where delivery of one channel stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The history the offsets belong to; `None` while the channel has none (nothing
    /// was ever stored, or this node has not looked yet).
    pub epoch: Option<Arc<str>>,
    /// The last offset delivered (or known to be at or before the subscribers' start).
    pub offset: u64,
    /// The entry id delivered under `offset`, when known.
    pub entry_id: Option<Arc<str>>,
}

impl Position {
    pub fn new(epoch: &str, offset: u64, entry_id: Option<Arc<str>>) -> Position {
        Position {
            epoch: (!epoch.is_empty()).then(|| Arc::from(epoch)),
            offset,
            entry_id,
        }
    }

    /// The position right after delivering `p`.
    pub fn after(p: &Publication) -> Position {
        Position {
            epoch: p.epoch.clone(),
            offset: p.offset.unwrap_or(0),
            entry_id: p.entry_id.clone(),
        }
    }
}

/// What an arriving numbered publication is to a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The next one (or the first of a channel that had no history): deliver it.
    Next,
    /// Its offset was delivered already: drop it (normal while a gap is filled).
    Duplicate,
    /// Offsets after `after` are missing before it: fill them from history first.
    Gap { after: u64 },
    /// Another history than the one delivered (lost and started again): the
    /// subscribers' offsets are void (4012).
    OtherHistory,
    /// The offset delivered last came back with another entry: history was rolled
    /// back (a failover to a replica that missed writes) and offsets are reused (4012).
    Reused,
}

/// Judges a numbered publication (offset and epoch set) against `pos`.
pub fn judge(pos: &Position, offset: u64, epoch: &str, entry_id: Option<&str>) -> Verdict {
    let Some(current) = pos.epoch.as_deref() else {
        // No history known yet: this one starts it, from the offset the channel had.
        return if offset <= pos.offset.saturating_add(1) {
            Verdict::Next
        } else {
            Verdict::Gap { after: pos.offset }
        };
    };
    if current != epoch {
        return Verdict::OtherHistory;
    }
    if offset == pos.offset {
        return match (pos.entry_id.as_deref(), entry_id) {
            (Some(a), Some(b)) if a != b => Verdict::Reused,
            _ => Verdict::Duplicate,
        };
    }
    if offset < pos.offset {
        Verdict::Duplicate
    } else if offset > pos.offset.saturating_add(1) {
        Verdict::Gap { after: pos.offset }
    } else {
        Verdict::Next
    }
}

/// A page of history as read to fill a gap or recover a client: ascending
/// publications and the channel's newest offset and epoch.
pub trait Page {
    fn epoch(&self) -> &str;
    fn top(&self) -> u64;
    /// (offset, entry id) of each publication, ascending.
    fn offsets(&self) -> Box<dyn Iterator<Item = (u64, Option<&str>)> + '_>;
}

/// Why history cannot fill a gap after `pos` (5.8): the subscribers are closed 4012.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The epoch changed: history was lost and started again.
    Epoch,
    /// The newest offset is below the one delivered: history was rolled back.
    RolledBack,
    /// The entry delivered last has another id now: offsets were reused.
    Reused,
    /// Publications after the position are no longer kept (trimmed or expired), or
    /// the page has a hole.
    Trimmed,
}

/// Can `page`, read from `pos.offset` inclusive (so the entry delivered last is
/// there to compare), fill the gap after `pos`? Every entry must follow the one
/// before: a hole anywhere in the page is a loss, not only before its first entry.
pub fn fill_check(pos: &Position, page: &impl Page) -> Result<(), Loss> {
    match pos.epoch.as_deref() {
        // Nothing was ever stored when this node looked: any history is new.
        None if pos.offset == 0 => {
            return contiguous_from(0, page).then_some(()).ok_or(Loss::Trimmed)
        }
        None => {}
        Some(e) if e != page.epoch() => return Err(Loss::Epoch),
        Some(_) => {}
    }
    if page.epoch().is_empty() && pos.offset > 0 {
        return Err(Loss::Epoch);
    }
    if page.top() < pos.offset {
        return Err(Loss::RolledBack);
    }
    let mut entries = page.offsets().peekable();
    // The entry at the position itself, when still kept, must be the one delivered.
    if let Some(&(o, id)) = entries.peek() {
        if o == pos.offset {
            if let (Some(a), Some(b)) = (pos.entry_id.as_deref(), id) {
                if a != b {
                    return Err(Loss::Reused);
                }
            }
        }
    }
    contiguous_from(pos.offset, page)
        .then_some(())
        .ok_or(Loss::Trimmed)
}

/// True when the page holds every offset from `from + 1` to its top, in order (an
/// entry at `from` itself may lead).
fn contiguous_from(from: u64, page: &impl Page) -> bool {
    let mut expect = from + 1;
    for (o, _) in page.offsets() {
        if o < expect {
            // The entry at `from` (read inclusively) or below: not part of the gap.
            continue;
        }
        if o != expect {
            return false;
        }
        expect += 1;
    }
    expect == page.top() + 1 || page.top() <= from
}

/// Client recovery (5.3): can a subscriber that saw up to `offset` of `epoch` be
/// given everything after it from `page` (read after `offset`)? A `since` above the
/// newest offset means history was rolled back: never recovered.
pub fn recoverable(offset: u64, epoch: &str, page: &impl Page) -> bool {
    if offset > page.top() {
        return false;
    }
    if offset == 0 {
        // Nothing seen, so nothing to lose, whichever history this is.
        return contiguous_from(0, page);
    }
    epoch == page.epoch() && contiguous_from(offset, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P {
        epoch: &'static str,
        top: u64,
        entries: Vec<(u64, Option<&'static str>)>,
    }

    impl Page for P {
        fn epoch(&self) -> &str {
            self.epoch
        }
        fn top(&self) -> u64 {
            self.top
        }
        fn offsets(&self) -> Box<dyn Iterator<Item = (u64, Option<&str>)> + '_> {
            Box::new(self.entries.iter().copied())
        }
    }

    fn pos(epoch: &str, offset: u64, id: Option<&str>) -> Position {
        Position::new(epoch, offset, id.map(Arc::from))
    }

    #[test]
    fn judge_next_duplicate_gap_other_history_reused() {
        let p = pos("e", 5, Some("x5"));
        assert_eq!(judge(&p, 6, "e", None), Verdict::Next);
        assert_eq!(judge(&p, 4, "e", None), Verdict::Duplicate);
        assert_eq!(judge(&p, 5, "e", Some("x5")), Verdict::Duplicate);
        assert_eq!(judge(&p, 5, "e", Some("y5")), Verdict::Reused);
        assert_eq!(judge(&p, 9, "e", None), Verdict::Gap { after: 5 });
        assert_eq!(judge(&p, 6, "f", None), Verdict::OtherHistory);
        // A channel with no history yet: its first publication starts it.
        let fresh = Position::default();
        assert_eq!(judge(&fresh, 1, "e", None), Verdict::Next);
        assert_eq!(judge(&fresh, 3, "e", None), Verdict::Gap { after: 0 });
    }

    #[test]
    fn a_page_must_be_contiguous_throughout() {
        let p = pos("e", 2, Some("b"));
        let ok = P {
            epoch: "e",
            top: 5,
            entries: vec![(2, Some("b")), (3, None), (4, None), (5, None)],
        };
        assert_eq!(fill_check(&p, &ok), Ok(()));
        let hole = P {
            epoch: "e",
            top: 5,
            entries: vec![(2, Some("b")), (3, None), (5, None)],
        };
        assert_eq!(
            fill_check(&p, &hole),
            Err(Loss::Trimmed),
            "hole in the middle"
        );
        let trimmed = P {
            epoch: "e",
            top: 5,
            entries: vec![(4, None), (5, None)],
        };
        assert_eq!(fill_check(&p, &trimmed), Err(Loss::Trimmed));
        let short = P {
            epoch: "e",
            top: 5,
            entries: vec![(2, Some("b")), (3, None)],
        };
        assert_eq!(
            fill_check(&p, &short),
            Err(Loss::Trimmed),
            "the page stops before the top"
        );
    }

    #[test]
    fn rollbacks_and_reused_offsets_are_losses() {
        let p = pos("e", 7, Some("g"));
        let rolled = P {
            epoch: "e",
            top: 5,
            entries: vec![(5, None)],
        };
        assert_eq!(fill_check(&p, &rolled), Err(Loss::RolledBack));
        // The replica missed 6 and 7, then new publications took 6, 7, 8.
        let reused = P {
            epoch: "e",
            top: 8,
            entries: vec![(7, Some("G")), (8, None)],
        };
        assert_eq!(fill_check(&p, &reused), Err(Loss::Reused));
        let other = P {
            epoch: "f",
            top: 9,
            entries: vec![],
        };
        assert_eq!(fill_check(&p, &other), Err(Loss::Epoch));
        let flushed = P {
            epoch: "",
            top: 0,
            entries: vec![],
        };
        assert_eq!(fill_check(&p, &flushed), Err(Loss::Epoch));
        // Nothing new since: nothing to fill, no loss.
        let same = P {
            epoch: "e",
            top: 7,
            entries: vec![(7, Some("g"))],
        };
        assert_eq!(fill_check(&p, &same), Ok(()));
    }

    #[test]
    fn client_recovery() {
        let page = P {
            epoch: "e",
            top: 5,
            entries: vec![(4, None), (5, None)],
        };
        assert!(recoverable(3, "e", &page));
        assert!(!recoverable(2, "e", &page), "4 is the oldest kept");
        assert!(!recoverable(3, "f", &page), "other epoch");
        assert!(!recoverable(6, "e", &page), "above the newest: rolled back");
        assert!(recoverable(5, "e", &page), "nothing missed");
        let hole = P {
            epoch: "e",
            top: 5,
            entries: vec![(3, None), (5, None)],
        };
        assert!(!recoverable(2, "e", &hole), "a hole inside the page");
        let fresh = P {
            epoch: "n",
            top: 2,
            entries: vec![(1, None), (2, None)],
        };
        assert!(recoverable(0, "", &fresh), "since 0 of any epoch");
    }
}
