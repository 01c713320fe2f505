//! A small XML tree for writing domain XML: elements, text and comments, serialized with every
//! attribute and text value escaped, so that a path or a name can never break the document.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    Comment(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str) -> Self {
        Element {
            name: name.to_string(),
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attributes.push((name.to_string(), value.into()));
        self
    }

    pub fn attr_if(self, condition: bool, name: &str, value: impl Into<String>) -> Self {
        if condition {
            self.attr(name, value)
        } else {
            self
        }
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    pub fn comment(&mut self, text: impl Into<String>) {
        self.children.push(Node::Comment(text.into()));
    }

    pub fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    /// The document, indented by two spaces per level, ending with a newline.
    pub fn to_document(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        out.push_str(&indent);
        out.push('<');
        out.push_str(&self.name);
        for (name, value) in &self.attributes {
            out.push(' ');
            out.push_str(name);
            out.push_str("='");
            out.push_str(&escape(value));
            out.push('\'');
        }
        match self.children.as_slice() {
            [] => out.push_str("/>\n"),
            [Node::Text(text)] => {
                out.push('>');
                out.push_str(&escape(text));
                out.push_str("</");
                out.push_str(&self.name);
                out.push_str(">\n");
            }
            children => {
                out.push_str(">\n");
                for child in children {
                    match child {
                        Node::Element(element) => element.write(out, depth + 1),
                        Node::Text(text) => {
                            out.push_str(&"  ".repeat(depth + 1));
                            out.push_str(&escape(text));
                            out.push('\n');
                        }
                        Node::Comment(text) => {
                            out.push_str(&"  ".repeat(depth + 1));
                            out.push_str("<!-- ");
                            out.push_str(&comment_safe(text));
                            out.push_str(" -->\n");
                        }
                    }
                }
                out.push_str(&indent);
                out.push_str("</");
                out.push_str(&self.name);
                out.push_str(">\n");
            }
        }
    }
}

/// Escapes the five characters XML gives a meaning, for both text and quoted attributes.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

/// A comment may not contain `--` nor end with `-`; a path or a command in one could.
fn comment_safe(text: &str) -> String {
    let mut safe = text.replace("--", "- -");
    while safe.contains("--") {
        safe = safe.replace("--", "- -");
    }
    if safe.ends_with('-') {
        safe.push(' ');
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_read_back_unchanged() {
        let tricky = "/vms/a'b\"<c>&d.qcow2";
        let mut root = Element::new("domain").attr("type", "kvm");
        root.comment("a -- b -");
        root.push(Element::new("source").attr("file", tricky));
        root.push(Element::new("name").text(tricky));
        let text = root.to_document();
        let parsed = roxmltree::Document::parse(&text).unwrap();
        let source = parsed
            .descendants()
            .find(|n| n.has_tag_name("source"))
            .unwrap();
        assert_eq!(source.attribute("file"), Some(tricky));
        let name = parsed
            .descendants()
            .find(|n| n.has_tag_name("name"))
            .unwrap();
        assert_eq!(name.text(), Some(tricky));
        let comment = parsed.descendants().find(|n| n.is_comment()).unwrap();
        assert!(!comment.text().unwrap().contains("--"));
    }
}
