"""`rvm web`: the in-browser page (`page/`: index.html, app.js, style.css and its npm engines) and `site`, which
builds a self-contained folder from it and the given artifacts and serves it."""
