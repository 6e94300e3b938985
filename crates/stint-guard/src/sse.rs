//! A Server-Sent Events parser (the `text/event-stream` format of the HTML standard). Pure: bytes in,
//! frames out, so it is tested without a network.

/// The longest line accepted; a longer one means the stream is not what we expect.
const MAX_LINE: usize = 4 << 20;

/// What the parser found in the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A `:` comment line (stint's `: connected` and `: keep-alive`).
    Comment(String),
    /// A complete event, ended by a blank line.
    Event {
        /// The `id` given in this event's block, if any.
        id: Option<String>,
        /// The event name (`message` when the block gave none).
        event: String,
        /// The `data` lines joined by `\n`; empty for a block of only an `id`.
        data: String,
    },
}

/// The stream broke the format's limits.
#[derive(Debug, thiserror::Error)]
#[error("event stream line or event longer than {MAX_LINE} bytes")]
pub(crate) struct LineTooLong;

/// Incremental parser: feed it chunks as they arrive, in order.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// The first line has been read (a byte-order mark is only stripped from it).
    started: bool,
    id: Option<String>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Parses `chunk`, returning the frames it completes.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<Frame>, LineTooLong> {
        let mut out = Vec::new();
        if self.after_cr {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            if !chunk.is_empty() {
                self.after_cr = false;
            }
        }
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.push(&chunk[..pos])?;
            let line = std::mem::take(&mut self.line);
            self.line(&line, &mut out)?;
            let cr = chunk[pos] == b'\r';
            chunk = &chunk[pos + 1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push(chunk)?;
        Ok(out)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), LineTooLong> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, raw: &[u8], out: &mut Vec<Frame>) -> Result<(), LineTooLong> {
        let decoded = String::from_utf8_lossy(raw);
        let mut line = &*decoded;
        if !std::mem::replace(&mut self.started, true) {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Frame::Comment(comment.trim_start_matches(' ').to_owned()));
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.data.len() + value.len() >= MAX_LINE {
                    return Err(LineTooLong);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Frame>) {
        let id = self.id.take();
        let event = self.event.take();
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::replace(&mut self.has_data, false);
        if has_data || id.is_some() {
            out.push(Frame::Event {
                id,
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, event: &str, data: &str) -> Frame {
        Frame::Event {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    fn all(input: &[u8]) -> Vec<Frame> {
        Parser::default().feed(input).expect("parses")
    }

    #[test]
    fn stint_events_and_comments() {
        let input =
            b": connected\n\nid: 42\nevent: session.ended\ndata: {\"sid\":\"ses_a\"}\n\n: keep-alive\n\n";
        assert_eq!(
            all(input),
            [
                Frame::Comment("connected".into()),
                event(Some("42"), "session.ended", "{\"sid\":\"ses_a\"}"),
                Frame::Comment("keep-alive".into()),
            ]
        );
    }

    #[test]
    fn every_split_of_the_input_gives_the_same_frames() {
        let input: &[u8] =
            b"\xEF\xBB\xBF: hi\r\nid:7\r\nevent:x\r\ndata:a\r\ndata: b\r\n\r\nid: 8\rdata:c\r\rdata\n\n";
        let whole = all(input);
        assert_eq!(
            whole,
            [
                Frame::Comment("hi".into()),
                event(Some("7"), "x", "a\nb"),
                event(Some("8"), "message", "c"),
                event(None, "message", ""),
            ]
        );
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut p = Parser::default();
                let mut got = p.feed(&input[..a]).expect("parses");
                got.extend(p.feed(&input[a..b]).expect("parses"));
                got.extend(p.feed(&input[b..]).expect("parses"));
                assert_eq!(got, whole, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let mut p = Parser::default();
        assert!(
            p.feed(b"id: 1\nevent: session.ended\ndata: {}\n")
                .expect("parses")
                .is_empty()
        );
        assert_eq!(
            p.feed(b"\n").expect("parses"),
            [event(Some("1"), "session.ended", "{}")]
        );
    }

    #[test]
    fn blank_lines_alone_and_unknown_fields_dispatch_nothing() {
        assert!(all(b"\n\n\nretry: 10\nfoo: bar\n\n").is_empty());
    }

    #[test]
    fn an_id_with_nul_is_ignored() {
        assert_eq!(all(b"id: 1\0\ndata: x\n\n"), [event(None, "message", "x")]);
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut p = Parser::default();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..4 {
            p.feed(&chunk).expect("within the limit");
        }
        assert!(p.feed(b"a").is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(all(b"data: \xFF\n\n"), [event(None, "message", "\u{FFFD}")]);
    }
}
