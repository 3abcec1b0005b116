"""One module per platform: inbound parsing, outbound client and the platform's quirks."""
