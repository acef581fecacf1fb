//! Badges in the common flat style (shields.io's `flat`): a grey label, a coloured message.

/// The colours of the flat style.
pub(super) const GREEN: &str = "#4c1";
pub(super) const RED: &str = "#e05d44";
pub(super) const YELLOW: &str = "#dfb317";
pub(super) const GREY: &str = "#9f9f9f";

/// Approximate width of Verdana 11px text, as shields measures it closely enough.
fn text_width(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '!' | '|' | '\'' | ' ' => 4,
            'm' | 'w' | 'M' | 'W' => 10,
            c if c.is_ascii_uppercase() => 8,
            _ => 7,
        })
        .sum()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The SVG of a badge; `label` and `message` may come from a request or a repository and are
/// escaped (and cut to 60 characters).
pub(super) fn svg(label: &str, message: &str, colour: &str) -> String {
    let cut = |s: &str| s.chars().take(60).collect::<String>();
    let (label, message) = (cut(label), cut(message));
    let (lw, mw) = (text_width(&label) + 10, text_width(&message) + 10);
    let w = lw + mw;
    let (l, m) = (escape(&label), escape(&message));
    let (lx, mx) = (lw * 5, (lw + mw / 2) * 10);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{l}: {m}"><title>{l}: {m}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{colour}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110"><text x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{l}</text><text x="{lx}" y="140" transform="scale(.1)">{l}</text><text x="{mx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{m}</text><text x="{mx}" y="140" transform="scale(.1)">{m}</text></g></svg>"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_escaped() {
        let s = svg("build", "<script>&\"", RED);
        assert!(s.contains("&lt;script&gt;&amp;&quot;"));
        assert!(!s.contains("<script>"));
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    }
}
