//! The two exposition formats of `/metrics` and the choice between them: prometheus-client
//! writes OpenMetrics 1.0.0; the Prometheus text format 0.0.4, served unless the scrape asks
//! for OpenMetrics, is made from it ([`to_text_004`]).

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): the default.
    Text,
    /// OpenMetrics 1.0.0 (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

const OPENMETRICS: &str = "application/openmetrics-text";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for (RFC 9110 §12.5.1): OpenMetrics when its
    /// media type (or a range covering it, `application/*`) has a higher weight than
    /// `text/plain`; text otherwise, with no header, with `*/*` and on a tie. Media types are
    /// matched case-insensitively; the most specific range matching a type gives its weight.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let om = weight(accept, OPENMETRICS);
        if om > 0.0 && om > weight(accept, "text/plain") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The weight `accept` gives `media` (`type/subtype`, lower case): the `q` of the most
/// specific range that matches it (exact, then `type/*`, then `*/*`), 0 when none does.
fn weight(accept: &str, media: &str) -> f32 {
    let (ty, _) = media.split_once('/').unwrap_or((media, ""));
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let Some(r) = parts.next().map(|r| r.trim().to_ascii_lowercase()) else {
            continue;
        };
        let specificity = if r == media {
            3
        } else if r.strip_suffix("/*") == Some(ty) {
            2
        } else if r == "*/*" {
            1
        } else {
            continue;
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(0.0);
        if best.is_none_or(|(s, bq)| specificity > s || specificity == s && q > bq) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// Every metric of `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut om = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut om, registry);
    match format {
        Format::OpenMetrics => om,
        Format::Text => to_text_004(&om),
    }
}

/// A `/metrics` answer in the format the request's `Accept` asks for; `render` writes it.
pub fn respond(headers: &HeaderMap, render: impl FnOnce(Format) -> String) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept"),
        ],
        render(format),
    )
        .into_response()
}

/// OpenMetrics as prometheus-client writes it, in the text format 0.0.4. A counter family
/// `x` becomes `x_total` in its HELP and TYPE lines, the name its samples already have (a
/// 0.0.4 parser ties HELP and TYPE to sample names, so otherwise every counter would have no
/// help); its `x_created` samples are dropped. `info` becomes a gauge `x_info`, `unknown`
/// `untyped`. UNIT lines and `# EOF` do not exist in 0.0.4; exemplars are cut; HELP keeps
/// only the escapes 0.0.4 knows (`\\`, `\n`).
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<(&str, &str)> = None;
    let mut created: Option<String> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name_004, kind_004) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            created = (kind == "counter").then(|| format!("{name}_created"));
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {name_004} {}\n", help_004(text)));
            }
            out.push_str(&format!("# TYPE {name_004} {kind_004}\n"));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if created.as_deref() == Some(sample_name) {
            continue;
        }
        out.push_str(without_exemplar(line));
        out.push('\n');
    }
    out
}

/// An OpenMetrics HELP text with `\"` unescaped: 0.0.4 escapes only `\\` and `\n`.
fn help_004(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('"') => out.push('"'),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A sample line without its ` # {…} value` exemplar (found after the label set, whose
/// quoted values may themselves hold `#`).
fn without_exemplar(line: &str) -> &str {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut labels_end = 0;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => {
                labels_end = i;
                break;
            }
            ' ' if !in_quotes && labels_end == 0 && !line[..i].contains('{') => {
                labels_end = i;
                break;
            }
            _ => {}
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::Unit;

    use super::*;

    #[test]
    fn accept_headers_pick_the_format() {
        let om = Format::OpenMetrics;
        let text = Format::Text;
        for (accept, want) in [
            (None, text),
            (Some(""), text),
            (Some("*/*"), text),
            (Some("text/plain"), text),
            (Some("text/plain;version=0.0.4"), text),
            (Some("application/json"), text),
            (Some("application/openmetrics-text"), om),
            (Some("Application/OpenMetrics-Text; Version=1.0.0"), om),
            (Some("application/*"), om),
            (Some("application/openmetrics-text;q=0"), text),
            (Some("application/openmetrics-text;q=0.5, text/plain"), text),
            (Some("text/plain;q=0.2, application/openmetrics-text;q=0.3"), om),
            (Some("application/openmetrics-text;q=0.5, */*"), text),
            (Some("application/*;q=0.9, application/openmetrics-text;q=0.1, */*;q=0.5"), text),
            // Prometheus 2.x's scrape header.
            (
                Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                om,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::with_prefix("t");
        let c: Counter = Counter::default();
        c.inc();
        r.register("ops", "Operations \"done\"", c);
        let g: Gauge = Gauge::default();
        g.set(3);
        r.register_with_unit("size", "Size", Unit::Bytes, g);
        r.register(
            "build",
            "Build",
            Info::new(vec![("v".to_string(), "1".to_string())]),
        );
        r
    }

    #[test]
    fn text_004_names_counters_by_their_samples_and_drops_what_it_lacks() {
        let text = encode(&registry(), Format::Text);
        assert_eq!(
            text,
            "# HELP t_ops_total Operations \"done\".\n\
             # TYPE t_ops_total counter\n\
             t_ops_total 1\n\
             # HELP t_size_bytes Size.\n\
             # TYPE t_size_bytes gauge\n\
             t_size_bytes 3\n\
             # HELP t_build_info Build.\n\
             # TYPE t_build_info gauge\n\
             t_build_info{v=\"1\"} 1\n"
        );
        let om = encode(&registry(), Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE t_ops counter\n"), "{om}");
    }

    #[test]
    fn exemplars_and_created_samples_are_cut() {
        let om = "# HELP c C.\n# TYPE c counter\nc_total{a=\"x } # y\"} 1 # {trace=\"t\"} 1.0\n\
                  c_created{a=\"x\"} 1.7e9\nd 2 # {t=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP c_total C.\n# TYPE c_total counter\nc_total{a=\"x } # y\"} 1\nd 2\n"
        );
    }
}
