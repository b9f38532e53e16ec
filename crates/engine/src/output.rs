//! The per-request text-out stage: generated text in, client-visible deltas out.
//!
//! Tokens become text in the tokenizer's stream decoder (whole characters only); this
//! module takes that text and
//!
//! * ends the output at the first stop string, which never reaches the client, even when
//!   it spans several tokens: text that could be the start of a stop string is held back
//!   until the next piece shows whether it is one ([`StopFilter`]);
//! * splits a reasoning model's `<think>…</think>` from its answer
//!   ([`ReasoningSplitter`]), including templates that open `<think>` in the prompt, as
//!   DeepSeek-R1's does, so the output starts inside the reasoning.
//!
//! A server only formats what comes out of here.

/// The opening tag of a reasoning block.
pub const THINK_OPEN: &str = "<think>";
/// The closing tag of a reasoning block.
pub const THINK_CLOSE: &str = "</think>";

/// What [`StopFilter::push`] gives back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Text that can be shown: it is not, and cannot become, part of a stop string.
    pub text: String,
    /// A stop string was found: the output ends here, and `text` is everything before it.
    pub stopped: bool,
}

/// Finds stop strings in a stream of text across piece boundaries.
#[derive(Clone, Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopFilter {
    /// A filter for these stop strings; empty strings are ignored (they would stop
    /// before the first character).
    pub fn new<S: AsRef<str>>(stops: &[S]) -> StopFilter {
        StopFilter {
            stops: stops
                .iter()
                .map(|s| s.as_ref().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been found (later pushes return nothing).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds the next piece of text.
    pub fn push(&mut self, piece: &str) -> Filtered {
        if self.stopped {
            return Filtered {
                text: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(piece);
        // The earliest match wins, so that no stop string is shown in part.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.held.truncate(at);
            self.stopped = true;
            return Filtered {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.partial_suffix_len();
        let emit_len = self.held.len() - keep;
        let text = self.held[..emit_len].to_owned();
        self.held.drain(..emit_len);
        Filtered {
            text,
            stopped: false,
        }
    }

    /// Ends the stream: held text that turned out not to be a stop string comes out.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// The length of the longest suffix of the held text that is a proper prefix of a
    /// stop string (and so must wait for more text).
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        // Char boundaries from the left: the first suffix that matches is the longest.
        for (start, _) in held.char_indices() {
            let suffix = &held[start..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                return suffix.len();
            }
        }
        0
    }
}

/// A piece of output after the reasoning split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Text inside `<think>…</think>`.
    pub reasoning: String,
    /// The answer's text.
    pub content: String,
}

/// Splits `<think>…</think>` from the answer in a stream of text.
///
/// An opening tag counts only before any answer text (leading whitespace aside), as
/// reasoning models emit it; a later `<think>` is the answer talking about tags. The
/// whitespace between `</think>` and the answer is dropped.
#[derive(Clone, Debug)]
pub struct ReasoningSplitter {
    state: SplitState,
    held: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SplitState {
    /// Nothing but whitespace so far: `<think>` may still open.
    Start,
    /// Inside the reasoning block.
    Reasoning,
    /// Just after `</think>`: leading whitespace is dropped.
    AfterReasoning,
    /// In the answer.
    Content,
}

impl ReasoningSplitter {
    /// A splitter; `in_reasoning` when the prompt already opened `<think>` (the rendered
    /// prompt ends with it).
    pub fn new(in_reasoning: bool) -> ReasoningSplitter {
        ReasoningSplitter {
            state: if in_reasoning {
                SplitState::Reasoning
            } else {
                SplitState::Start
            },
            held: String::new(),
        }
    }

    /// A splitter that is off: all text is answer text, `<think>` included.
    pub fn off() -> ReasoningSplitter {
        ReasoningSplitter {
            state: SplitState::Content,
            held: String::new(),
        }
    }

    /// Whether a prompt ends inside an open reasoning block (`<think>` with no
    /// `</think>` after it), as DeepSeek-R1's template leaves it.
    pub fn prompt_opens_reasoning(prompt: &str) -> bool {
        match prompt.rfind(THINK_OPEN) {
            Some(at) => !prompt[at..].contains(THINK_CLOSE),
            None => false,
        }
    }

    /// Whether the text so far ends inside a reasoning block.
    pub fn in_reasoning(&self) -> bool {
        self.state == SplitState::Reasoning
    }

    /// Whether a reasoning block may still open (nothing but whitespace so far).
    pub fn may_open_reasoning(&self) -> bool {
        self.state == SplitState::Start
    }

    /// Adds the next piece of text.
    pub fn push(&mut self, piece: &str) -> Split {
        self.held.push_str(piece);
        let mut out = Split::default();
        loop {
            match self.state {
                SplitState::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                        self.held = rest.to_owned();
                        self.state = SplitState::Reasoning;
                    } else if trimmed.is_empty() || THINK_OPEN.starts_with(trimmed) {
                        // Could still become `<think>`: wait.
                        return out;
                    } else {
                        self.state = SplitState::Content;
                    }
                }
                SplitState::Reasoning => {
                    if let Some(at) = self.held.find(THINK_CLOSE) {
                        out.reasoning.push_str(&self.held[..at]);
                        self.held.drain(..at + THINK_CLOSE.len());
                        self.state = SplitState::AfterReasoning;
                    } else {
                        let keep = partial_tag_suffix(&self.held, THINK_CLOSE);
                        let emit = self.held.len() - keep;
                        out.reasoning.push_str(&self.held[..emit]);
                        self.held.drain(..emit);
                        return out;
                    }
                }
                SplitState::AfterReasoning => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = trimmed.to_owned();
                    self.state = SplitState::Content;
                }
                SplitState::Content => {
                    out.content.push_str(&self.held);
                    self.held.clear();
                    return out;
                }
            }
        }
    }

    /// Ends the stream: held text comes out where it was heading (an unclosed reasoning
    /// block stays reasoning).
    pub fn finish(&mut self) -> Split {
        let held = std::mem::take(&mut self.held);
        match self.state {
            SplitState::Reasoning => Split {
                reasoning: held,
                content: String::new(),
            },
            SplitState::AfterReasoning => Split::default(),
            SplitState::Start | SplitState::Content => Split {
                reasoning: String::new(),
                content: held,
            },
        }
    }
}

/// One request's whole text-out stage: stop strings first (on the raw text, as the
/// client never sees a stop string, wherever it falls), then the reasoning split; counts
/// the tokens spent reasoning.
#[derive(Clone, Debug)]
pub struct OutputStage {
    stops: StopFilter,
    splitter: ReasoningSplitter,
    reasoning_tokens: usize,
}

/// What one token's text produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenText {
    /// Text for the client (either part may be empty).
    pub split: Split,
    /// A stop string ended the output: generate no more.
    pub stopped: bool,
}

impl OutputStage {
    /// A stage with these stop strings; `in_reasoning` when the prompt left `<think>`
    /// open (see [`ReasoningSplitter::prompt_opens_reasoning`]).
    pub fn new<S: AsRef<str>>(stops: &[S], in_reasoning: bool) -> OutputStage {
        OutputStage {
            stops: StopFilter::new(stops),
            splitter: ReasoningSplitter::new(in_reasoning),
            reasoning_tokens: 0,
        }
    }

    /// A stage with stop strings only: reasoning text stays in the answer (completions,
    /// and chat requests that turn the split off).
    pub fn without_reasoning_split<S: AsRef<str>>(stops: &[S]) -> OutputStage {
        OutputStage {
            stops: StopFilter::new(stops),
            splitter: ReasoningSplitter::off(),
            reasoning_tokens: 0,
        }
    }

    /// Adds the text of one generated token (possibly empty, when the token ends in the
    /// middle of a character).
    pub fn push_token(&mut self, text: &str) -> TokenText {
        // A token belongs to the reasoning when it is read inside the block, or opens it.
        let was_reasoning = self.splitter.in_reasoning();
        let filtered = self.stops.push(text);
        let split = self.splitter.push(&filtered.text);
        if was_reasoning || self.splitter.in_reasoning() {
            self.reasoning_tokens += 1;
        }
        TokenText {
            split,
            stopped: filtered.stopped,
        }
    }

    /// Ends the output: `rest` is what the decoder still held; returns the last text.
    pub fn finish(&mut self, rest: &str) -> Split {
        let mut tail = self.stops.push(rest).text;
        tail.push_str(&self.stops.finish());
        let mut split = self.splitter.push(&tail);
        let last = self.splitter.finish();
        split.reasoning.push_str(&last.reasoning);
        split.content.push_str(&last.content);
        split
    }

    /// Whether a stop string has ended the output.
    pub fn stopped(&self) -> bool {
        self.stops.stopped()
    }

    /// Whether the text so far ends inside a reasoning block.
    pub fn in_reasoning(&self) -> bool {
        self.splitter.in_reasoning()
    }

    /// Whether a reasoning block may still open.
    pub fn may_open_reasoning(&self) -> bool {
        self.splitter.may_open_reasoning()
    }

    /// Generated tokens that fell inside `<think>…</think>` (tags included).
    pub fn reasoning_tokens(&self) -> usize {
        self.reasoning_tokens
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_tag_suffix(text: &str, tag: &str) -> usize {
    for (start, _) in text.char_indices() {
        let suffix = &text[start..];
        if suffix.len() < tag.len() && tag.starts_with(suffix) {
            return suffix.len();
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the pieces and returns (everything shown, stopped).
    fn run_stop(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops);
        let mut shown = String::new();
        for p in pieces {
            let out = f.push(p);
            shown.push_str(&out.text);
            if out.stopped {
                return (shown, true);
            }
        }
        shown.push_str(&f.finish());
        (shown, false)
    }

    #[test]
    fn no_stop_strings_pass_everything_through_at_once() {
        let mut f = StopFilter::new::<&str>(&[]);
        assert_eq!(f.push("Hello").text, "Hello");
        assert_eq!(f.push(" world").text, " world");
        assert_eq!(f.finish(), "");
    }

    #[test]
    fn stop_inside_one_piece_cuts_before_it() {
        assert_eq!(
            run_stop(&["STOP"], &["abc STOP def"]),
            ("abc ".to_owned(), true)
        );
    }

    #[test]
    fn stop_spanning_pieces_is_never_shown() {
        let mut f = StopFilter::new(&["\n\nUser:"]);
        let a = f.push("Sure.\n");
        assert_eq!(a.text, "Sure.", "the newline could start the stop string");
        let b = f.push("\nUs");
        assert_eq!(b.text, "");
        let c = f.push("er: hi");
        assert_eq!(
            c,
            Filtered {
                text: String::new(),
                stopped: true
            }
        );
        assert!(f.stopped());
        assert_eq!(f.finish(), "");
    }

    #[test]
    fn held_text_that_is_not_a_stop_comes_out_later() {
        let mut f = StopFilter::new(&["END"]);
        assert_eq!(f.push("the E").text, "the ");
        assert_eq!(f.push("N").text, "");
        assert_eq!(f.push("D").text, "");
        assert!(f.stopped());

        let mut f = StopFilter::new(&["END"]);
        assert_eq!(f.push("the E").text, "the ");
        assert_eq!(f.push("nd").text, "End");
        assert_eq!(f.push(" EN").text, " ");
        assert_eq!(f.finish(), "EN", "at the end, held text is shown");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run_stop(&["bb", "a"], &["xxbb a"]), ("xx".to_owned(), true));
        assert_eq!(
            run_stop(&["world", "lo w"], &["hel", "lo", " world"]),
            ("hel".to_owned(), true)
        );
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        // "é" is two bytes; the stop string starts with it.
        let mut f = StopFilter::new(&["éx"]);
        assert_eq!(f.push("caf").text, "caf");
        assert_eq!(f.push("é").text, "");
        assert_eq!(f.push("!").text, "é!");
        assert_eq!(
            run_stop(&["日本"], &["こんにち日", "本語"]),
            ("こんにち".to_owned(), true)
        );
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        assert_eq!(run_stop(&[""], &["abc"]), ("abc".to_owned(), false));
    }

    #[test]
    fn a_stage_without_the_split_keeps_reasoning_in_the_answer() {
        let mut stage = OutputStage::without_reasoning_split(&["STOP"]);
        let mut content = String::new();
        for piece in ["<think>", "a", "</think>", " b", "ST", "OP", "c"] {
            let step = stage.push_token(piece);
            assert!(step.split.reasoning.is_empty());
            content.push_str(&step.split.content);
            if step.stopped {
                break;
            }
        }
        content.push_str(&stage.finish("").content);
        assert_eq!(content, "<think>a</think> b");
        assert_eq!(stage.reasoning_tokens(), 0);
    }

    fn run_split(in_reasoning: bool, pieces: &[&str]) -> Split {
        let mut s = ReasoningSplitter::new(in_reasoning);
        let mut all = Split::default();
        for p in pieces {
            let out = s.push(p);
            all.reasoning.push_str(&out.reasoning);
            all.content.push_str(&out.content);
        }
        let out = s.finish();
        all.reasoning.push_str(&out.reasoning);
        all.content.push_str(&out.content);
        all
    }

    #[test]
    fn think_block_is_split_from_the_answer() {
        let s = run_split(
            false,
            &[
                "<thi",
                "nk>",
                "Let me ",
                "think.</th",
                "ink>",
                "\n\n",
                "The answer",
                " is 4.",
            ],
        );
        assert_eq!(s.reasoning, "Let me think.");
        assert_eq!(s.content, "The answer is 4.");
    }

    #[test]
    fn prompt_that_opens_think_starts_in_reasoning() {
        let prompt = "<｜User｜>2+2?<｜Assistant｜><think>\n";
        assert!(ReasoningSplitter::prompt_opens_reasoning(prompt));
        assert!(!ReasoningSplitter::prompt_opens_reasoning(
            "<think>a</think> b"
        ));
        assert!(!ReasoningSplitter::prompt_opens_reasoning("plain"));
        let s = run_split(true, &["Four, since 2+2=4.", "</think>", "4"]);
        assert_eq!(s.reasoning, "Four, since 2+2=4.");
        assert_eq!(s.content, "4");
    }

    #[test]
    fn reasoning_streams_as_it_comes_but_holds_a_partial_close_tag() {
        let mut s = ReasoningSplitter::new(true);
        assert!(s.in_reasoning());
        assert_eq!(s.push("abc</").reasoning, "abc");
        let out = s.push("think>ok");
        assert_eq!(out.reasoning, "");
        assert_eq!(out.content, "ok");
        assert!(!s.in_reasoning());
    }

    #[test]
    fn text_without_think_is_all_content() {
        let s = run_split(false, &["Hello", " <think> is a tag"]);
        assert_eq!(s.reasoning, "");
        assert_eq!(s.content, "Hello <think> is a tag");
        // A lone "<" at the start waits, then turns out to be content.
        let s = run_split(false, &["<", "b>bold"]);
        assert_eq!(s.content, "<b>bold");
        let s = run_split(false, &["<th"]);
        assert_eq!(s.content, "<th");
    }

    #[test]
    fn stage_counts_reasoning_tokens_and_applies_stops_first() {
        // Tokens as a reasoning model emits them: tags are tokens of their own.
        let mut st = OutputStage::new(&["\nUser"], false);
        let mut all = Split::default();
        let tokens = [
            "<think>", "Two", " plus", " two.", "</think>", "\n\n", "4", "\n", "User", ":",
        ];
        let mut n = 0;
        for t in tokens {
            n += 1;
            let step = st.push_token(t);
            all.reasoning.push_str(&step.split.reasoning);
            all.content.push_str(&step.split.content);
            if step.stopped {
                break;
            }
        }
        assert!(st.stopped());
        assert_eq!(n, 9, "stopped at the token completing the stop string");
        let last = st.finish("");
        assert_eq!(last, Split::default());
        assert_eq!(all.reasoning, "Two plus two.");
        assert_eq!(all.content, "4");
        // <think>, three reasoning tokens, </think>.
        assert_eq!(st.reasoning_tokens(), 5);
    }

    #[test]
    fn stage_finish_flushes_held_text() {
        let mut st = OutputStage::new(&["ABC"], true);
        assert_eq!(st.push_token("x</thi").split.reasoning, "x");
        let step = st.push_token("nk>yA");
        assert_eq!(step.split.content, "y");
        assert_eq!(
            st.finish("B"),
            Split {
                reasoning: String::new(),
                content: "AB".into()
            }
        );
        assert_eq!(st.reasoning_tokens(), 2);
    }

    #[test]
    fn unclosed_reasoning_stays_reasoning() {
        let s = run_split(false, &["<think>still going </thi"]);
        assert_eq!(s.reasoning, "still going </thi");
        assert_eq!(s.content, "");
    }
}
