"""The pure core: content, triage, matching and conversation logic. No Telegram, SQL or files-on-disk I/O
other than loading content, which is passed in by path."""
