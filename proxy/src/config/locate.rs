//! Maps a field path such as `clusters[1].endpoints[0]` back to a line of the YAML text.
//!
//! serde only tells us the line of the first error it hits; semantic checks run on the
//! deserialized structs, which have forgotten where they came from. So the text is parsed a
//! second time with yaml-rust2's event parser, which marks every node, into a skeleton that
//! keeps only keys, sequence positions and lines.

use std::collections::HashMap;
use std::rc::Rc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Answers "which line is this field on?" for one YAML text.
pub(crate) struct Locator {
    root: Option<Rc<Node>>,
}

#[derive(Debug)]
enum Node {
    Leaf {
        line: usize,
    },
    Seq {
        line: usize,
        items: Vec<Rc<Node>>,
    },
    Map {
        line: usize,
        entries: Vec<Entry>,
    },
    /// `*name`: its own line, the anchored node's contents.
    Alias {
        line: usize,
        target: Rc<Node>,
    },
}

#[derive(Debug)]
struct Entry {
    /// `None` for keys that are not scalars; no config field is spelled that way.
    key: Option<String>,
    key_line: usize,
    value: Rc<Node>,
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Leaf { line }
            | Node::Seq { line, .. }
            | Node::Map { line, .. }
            | Node::Alias { line, .. } => *line,
        }
    }

    /// The node whose contents this is: an alias stands for its anchor.
    fn contents(&self) -> &Node {
        match self {
            Node::Alias { target, .. } => target.contents(),
            other => other,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

impl Locator {
    pub(crate) fn new(text: &str) -> Locator {
        let mut builder = Builder::default();
        // A syntax error only truncates the event stream; what was read before it still
        // locates fields, and serde reports the error itself.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Locator {
            root: builder.finish(),
        }
    }

    /// The 1-based line where `path` is written: for a mapping entry the line of its key,
    /// for a sequence item the line where the item starts. A path that is not in the text
    /// (a defaulted field, an index past the end) gives the line of its nearest ancestor that
    /// is; an empty path or `.` is the document itself. `None` only for an empty document.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let (line, _) = self.walk(path)?;
        Some(line)
    }

    /// The line of the second `key` in the mapping at `path`, if it is written twice.
    pub(crate) fn repeated_key_line(&self, path: &str, key: &str) -> Option<usize> {
        let (_, Some(Node::Map { entries, .. })) = self.walk(path)? else {
            return None;
        };
        entries
            .iter()
            .filter(|entry| entry.key.as_deref() == Some(key))
            .nth(1)
            .map(|entry| entry.key_line)
    }

    /// The line for `path` (see [`Locator::line`]) and, if the whole path exists, its node.
    fn walk(&self, path: &str) -> Option<(usize, Option<&Node>)> {
        let mut node = self.root.as_deref()?;
        let mut line = node.line();
        for segment in segments(path) {
            let next = match (node.contents(), segment) {
                (Node::Map { entries, .. }, Segment::Key(key)) => entries
                    .iter()
                    .find(|entry| entry.key.as_deref() == Some(key))
                    .map(|entry| (entry.key_line, entry.value.as_ref())),
                (Node::Seq { items, .. }, Segment::Index(index)) => {
                    items.get(index).map(|item| (item.line(), item.as_ref()))
                }
                _ => None,
            };
            let Some((next_line, next_node)) = next else {
                return Some((line, None));
            };
            line = next_line;
            node = next_node;
        }
        Some((line, Some(node.contents())))
    }
}

/// Splits `a.b[2].c` into its keys and indexes. Parsing stops at anything else (serde's
/// `?` for an unknown position, say), which leaves the nearest ancestor.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = path;
    if rest == "." {
        return out;
    }
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((digits, tail)) = after.split_once(']') else {
                break;
            };
            let Ok(index) = digits.parse() else {
                break;
            };
            out.push(Segment::Index(index));
            rest = tail;
        } else {
            let rest_of_key = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_of_key.find(['.', '[']).unwrap_or(rest_of_key.len());
            let key = &rest_of_key[..end];
            if key.is_empty() || key == "?" {
                break;
            }
            out.push(Segment::Key(key));
            rest = &rest_of_key[end..];
        }
    }
    out
}

/// Builds the skeleton with an explicit stack, so a deeply nested (or hostile) document
/// cannot overflow the thread's stack.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Rc<Node>>,
    root: Option<Rc<Node>>,
    /// Set once the first document's root is complete; later events are ignored.
    done: bool,
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Rc<Node>>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<Entry>,
        pending_key: Option<(Option<String>, usize)>,
    },
}

impl Frame {
    fn into_node(self) -> (Rc<Node>, usize) {
        match self {
            Frame::Seq {
                line,
                anchor,
                items,
            } => (Rc::new(Node::Seq { line, items }), anchor),
            Frame::Map {
                line,
                anchor,
                entries,
                ..
            } => (Rc::new(Node::Map { line, entries }), anchor),
        }
    }
}

impl Builder {
    /// Hands a finished node to its parent; `key_text` is the scalar's text in case the
    /// parent is a mapping waiting for a key.
    fn complete(&mut self, node: Rc<Node>, anchor: usize, key_text: Option<String>) {
        if anchor != 0 {
            self.anchors.insert(anchor, Rc::clone(&node));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                self.done = true;
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some((key_text, node.line())),
                Some((key, key_line)) => entries.push(Entry {
                    key,
                    key_line,
                    value: node,
                }),
            },
        }
    }

    fn finish(mut self) -> Option<Rc<Node>> {
        while let Some(frame) = self.stack.pop() {
            let (node, anchor) = frame.into_node();
            self.complete(node, anchor, None);
        }
        self.root
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.done {
            return;
        }
        let line = mark.line();
        match event {
            Event::Scalar(text, _, anchor, _) => {
                self.complete(Rc::new(Node::Leaf { line }), anchor, Some(text));
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(target) => Node::Alias {
                        line,
                        target: Rc::clone(target),
                    },
                    None => Node::Leaf { line },
                };
                self.complete(Rc::new(node), 0, None);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor) = frame.into_node();
                    self.complete(node, anchor, None);
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# leading comment
listeners:
  - name: a
    address: 127.0.0.1:80
  - name: b
    tls:
      certificates:
        - cert_file: a.pem
          key_file: a.key

        -
          cert_file: b.pem
clusters:
  - name: c
    endpoints: [1.1.1.1:80, 2.2.2.2:80]
  - {name: d, endpoints: [\"3.3.3.3:80\",
      \"4.4.4.4:80\"], tls: {sni: x}}
shared: &anchor
  deep:
    value: 1
copy: *anchor
";

    #[test]
    fn nested_maps_and_sequences() {
        let locator = Locator::new(TEXT);
        let cases = [
            ("", 2),
            (".", 2),
            ("listeners", 2),
            ("listeners[0]", 3),
            ("listeners[0].name", 3),
            ("listeners[0].address", 4),
            ("listeners[1]", 5),
            ("listeners[1].tls", 6),
            ("listeners[1].tls.certificates", 7),
            ("listeners[1].tls.certificates[0]", 8),
            ("listeners[1].tls.certificates[0].key_file", 9),
            ("listeners[1].tls.certificates[1]", 12),
            ("listeners[1].tls.certificates[1].cert_file", 12),
            ("clusters[0].endpoints[1]", 15),
        ];
        for (path, line) in cases {
            assert_eq!(locator.line(path), Some(line), "{path}");
        }
    }

    #[test]
    fn flow_style() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.line("clusters[1]"), Some(16));
        assert_eq!(locator.line("clusters[1].name"), Some(16));
        assert_eq!(locator.line("clusters[1].endpoints[0]"), Some(16));
        assert_eq!(locator.line("clusters[1].endpoints[1]"), Some(17));
        assert_eq!(locator.line("clusters[1].tls.sni"), Some(17));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.line("listeners[0].tls"), Some(3));
        assert_eq!(locator.line("listeners[1].tls.alpn[0]"), Some(6));
        assert_eq!(locator.line("listeners[7].name"), Some(2));
        assert_eq!(locator.line("listeners.name"), Some(2));
        assert_eq!(locator.line("routes[0]"), Some(2));
        assert_eq!(locator.line("clusters[0].?.x"), Some(14));
    }

    #[test]
    fn aliases_resolve_to_their_anchor() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.line("copy"), Some(21));
        assert_eq!(locator.line("copy.deep.value"), Some(20));
    }

    #[test]
    fn repeated_keys() {
        let locator = Locator::new("a: 1\nb:\n  - x: 1\n    y: 2\n    x: 3\na: 4\n");
        assert_eq!(locator.repeated_key_line("", "a"), Some(6));
        assert_eq!(locator.repeated_key_line("b[0]", "x"), Some(5));
        assert_eq!(locator.repeated_key_line("b[0]", "y"), None);
        assert_eq!(locator.repeated_key_line("b[1]", "x"), None);
    }

    #[test]
    fn a_syntax_error_keeps_what_came_before_it() {
        let locator = Locator::new("a:\n  b: 1\n  c: [\nd: 2\n");
        assert_eq!(locator.line("a.b"), Some(2));
        assert_eq!(locator.line("d"), Some(1));
    }

    #[test]
    fn empty_and_scalar_documents() {
        assert_eq!(Locator::new("").line("a"), None);
        assert_eq!(Locator::new("# only a comment\n").line(""), None);
        assert_eq!(Locator::new("\n\nhello\n").line("a.b"), Some(3));
    }

    #[test]
    fn path_segments() {
        assert_eq!(
            segments("a[1].b_c[20].d"),
            vec![
                Segment::Key("a"),
                Segment::Index(1),
                Segment::Key("b_c"),
                Segment::Index(20),
                Segment::Key("d"),
            ]
        );
        assert_eq!(segments("."), vec![]);
        assert_eq!(segments("a[x].b"), vec![Segment::Key("a")]);
    }
}
