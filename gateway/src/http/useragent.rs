//! A short, safe description of a `User-Agent`: a browser or tool and an operating system from
//! a fixed vocabulary ("Firefox on Linux", "curl", "unknown client"). The raw header is never
//! shown to anyone — it is text the requester chose, and it would land in a victim's mailbox.

/// Browsers and tools, in the order they must be tested (Edge and Opera also say "Chrome",
/// Chrome also says "Safari").
const CLIENTS: [(&str, &str); 12] = [
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
    ("Wget/", "Wget"),
    ("python-requests/", "Python requests"),
    ("Go-http-client/", "Go HTTP client"),
    ("node", "Node.js"),
    ("agentkeys/", "AgentKeys CLI"),
];

/// Operating systems, in the order they must be tested (Android also says "Linux", iOS also
/// says "Mac OS X").
const SYSTEMS: [(&str, &str); 7] = [
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
];

/// The description of `user_agent` (absent: "unknown client").
pub fn describe(user_agent: Option<&str>) -> String {
    let ua = user_agent.unwrap_or_default();
    let client = CLIENTS
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|(_, name)| *name);
    let system = SYSTEMS
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|(_, name)| *name);
    match (client, system) {
        (Some(c), Some(s)) => format!("{c} on {s}"),
        (Some(c), None) => c.to_string(),
        (None, Some(s)) => format!("a client on {s}"),
        (None, None) => "unknown client".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn browsers_and_systems_come_from_a_fixed_vocabulary() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                "Firefox on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36 Edg/130.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                "Safari on iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            ("curl/8.5.0", "curl"),
        ];
        for (ua, want) in cases {
            assert_eq!(describe(Some(ua)), want, "{ua}");
        }
        assert_eq!(describe(None), "unknown client");
    }

    #[test]
    fn chosen_text_never_comes_through() {
        let phishing = "Your account is locked. Visit https://evil.example/unlock now. Firefox/1";
        let shown = describe(Some(phishing));
        assert_eq!(shown, "Firefox");
        assert!(!shown.contains("evil") && !shown.contains("http"));
        assert_eq!(describe(Some("Urgent: call +1 555 0100")), "unknown client");
    }
}
