"""``congvu web``: the read-only console where auditors and unit managers read the decision
log, the scores and the evidence in a browser.

- :mod:`.app`: the Starlette application, its routes and its guards (who may see what);
- :mod:`.pages`: what each page shows, read from the store (the report's figures come from
  :class:`gateway.report.figures.RollupFigures`, as ``congvu report`` reads them);
- :mod:`.users`: the console's accounts (Argon2 hashes in a TOML file) and roles;
- :mod:`.security`: sessions, CSRF tokens, the login rate limit, single sign-on;
- :mod:`.access`: the access log (every page seen, by whom);
- :mod:`.i18n`: the words of the pages, Vietnamese and English.

The charts are the report's own (:mod:`gateway.report.render`): SVG drawn on the server, so
no script runs in the browser and nothing is fetched from elsewhere.

Nothing here writes to the decision store, and the SMTP path never imports this package.
"""
