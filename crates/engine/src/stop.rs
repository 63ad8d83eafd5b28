//! Stop strings: generated text is held back while it could still be the start of a
//! stop string, so a stop string is never shown, even when it spans several tokens.

/// Streams text through, cutting it at the first stop string.
#[derive(Debug, Default)]
pub struct StopMatcher {
    /// The non-empty stop strings, each with its index in the list it was made from.
    stops: Vec<(usize, String)>,
    pending: String,
    /// The index (in the list given to [`new`](Self::new)) of the stop string found.
    matched: Option<usize>,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .map(|(i, s)| (i, s.clone()))
                .collect(),
            pending: String::new(),
            matched: None,
        }
    }

    /// Adds generated text; returns the text that is safe to show and whether a stop
    /// string was found (then everything from it on is dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        let mut out = String::new();
        let stopped = self.push_to(text, &mut out);
        (out, stopped)
    }

    /// [`push`](Self::push), appending the text that is safe to show to `out` (no
    /// allocation once the buffers have grown).
    pub fn push_to(&mut self, text: &str, out: &mut String) -> bool {
        self.pending.push_str(text);
        // The earliest match wins; at the same position, the first in the list.
        if let Some((at, index)) = self
            .stops
            .iter()
            .filter_map(|(i, s)| Some((self.pending.find(s.as_str())?, *i)))
            .min_by_key(|&(at, _)| at)
        {
            self.matched = Some(index);
            out.push_str(&self.pending[..at]);
            self.pending.clear();
            return true;
        }
        // Hold back the longest tail that is a proper prefix of a stop string.
        let mut hold = 0;
        for (_, s) in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > hold && self.pending.ends_with(&s[..i]) {
                    hold = i;
                }
            }
        }
        let cut = self.pending.len() - hold;
        out.push_str(&self.pending[..cut]);
        self.pending.drain(..cut);
        false
    }

    /// Makes room for `bytes` of pending text (the longest stop string plus a token's
    /// text), so pushing never reallocates.
    pub fn reserve(&mut self, bytes: usize) {
        self.pending.reserve(bytes);
    }

    /// The longest stop string, in bytes.
    pub fn max_stop_len(&self) -> usize {
        self.stops.iter().map(|(_, s)| s.len()).max().unwrap_or(0)
    }

    /// Which stop string was found (its index in the list given to
    /// [`new`](Self::new)), once one was.
    pub fn matched(&self) -> Option<usize> {
        self.matched
    }

    /// The text still held back (at the end of generation it is shown after all).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// [`flush`](Self::flush), appending to `out`.
    pub fn flush_to(&mut self, out: &mut String) {
        out.push_str(&self.pending);
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_spanning_pushes_is_never_shown() {
        let mut m = StopMatcher::new(&["</end>".to_string(), "\n\n".to_string()]);
        assert_eq!(m.push("hello </"), ("hello ".to_string(), false));
        assert_eq!(m.push("en"), (String::new(), false));
        assert_eq!(m.push("d> more"), (String::new(), true));
    }

    #[test]
    fn false_alarm_is_released() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("ST"), (String::new(), false));
        assert_eq!(m.push("ay"), ("STay".to_string(), false));
        assert_eq!(m.push("x S"), ("x ".to_string(), false));
        assert_eq!(m.flush(), "S");
    }

    #[test]
    fn earliest_stop_wins_and_no_stops_pass_through() {
        let mut m = StopMatcher::new(&["b".to_string(), "a".to_string()]);
        assert_eq!(m.matched(), None);
        assert_eq!(m.push("xxab"), ("xx".to_string(), true));
        assert_eq!(
            m.matched(),
            Some(1),
            "'a' (index 1) comes first in the text"
        );
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("anything"), ("anything".to_string(), false));
        assert_eq!(m.matched(), None);
    }

    #[test]
    fn matched_index_counts_empty_stops_and_ties_go_to_the_first() {
        let stops = ["".to_string(), "yz".to_string(), "y".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xyz"), ("x".to_string(), true));
        assert_eq!(
            m.matched(),
            Some(1),
            "index in the list as given, empty one included"
        );
    }

    #[test]
    fn multibyte_prefixes() {
        let mut m = StopMatcher::new(&["é!".to_string()]);
        assert_eq!(m.push("café"), ("caf".to_string(), false));
        assert_eq!(m.push("!"), (String::new(), true));
    }
}
