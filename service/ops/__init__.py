"""Actions the web, the CLI and the workers all call: replay and drop, cancel, fallback, preview, personal data,
backfill start and progress, the admin views' read models, the runtime that wires the parts together."""
