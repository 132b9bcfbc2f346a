"""SIPREC (RFC 7865/7866) recording sessions, sans-IO: multipart bodies, metadata, speakers."""
