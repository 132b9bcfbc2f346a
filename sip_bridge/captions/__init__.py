"""Live captions for people: the feed from the media processes, the hub, the HTTP server and
page."""
