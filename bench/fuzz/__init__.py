"""Fuzz: hostile generated messages through the check path, hostile SMTP dialogues through a
real gateway. Zero unhandled exceptions is the expected result.

    python -m bench.fuzz --messages 100000 --seed 1 [--dialogues 2000] [--workers 2]
    python -m bench.fuzz --seed 1 --replay 4711 [--dump DIR]   # one message, to reproduce
    python -m bench.fuzz --seed 1 --replay-dialogue 17         # one dialogue, with transcript

Messages are mutations of realistic official mail (random, duplicate, folded and encoded-word
headers; broken MIME boundaries; deep nesting; random types, transfer encodings and charsets;
NULs, 8-bit bytes, bare CR/LF; huge parameter lists; attachments such as signed, truncated or
damaged PDFs, Office files, zips, CMS signatures; forged and odd From/Sender/Reply-To), and the
attacks the gateway defends against (issue 15): signed PDFs with incremental updates written by
hand after the signature (objects redefined, re-pointed or freed; objects with no xref; a wrong
startxref; another /Root; hundreds of revisions; many %%EOF; looping /Prev) or with forged
signature dictionaries (/Contents and /ByteRange rewritten in place, /DocTimeStamp, another
/SubFilter); PDFs in gzip, tar, tar.gz, bz2, xz, nested archives and zips behind a stub,
truncated or lying about their size, with "../" member names or a huge declared size; MIME that
reads two ways (odd Content-Transfer-Encoding values, two Content-Type, -Transfer-Encoding or
-Disposition fields or parameters, a space before the colon), message/partial, forwarded
messages in base64 or quoted-printable, uuencoded files in text parts, Word 2003 XML documents
in UTF-8 or UTF-16, documents in body parts with no file name, multipart/signed inside a
multipart/mixed with a disclaimer; official domains in look-alike letters (Unicode or
A-labels), quoted local parts holding an address, addresses hidden in encoded words. Each is
judged as ``congvu check`` judges it (the same transaction, the default policy, signature
validation in threads, a DNS stub that answers at once and never uses the network), then
recorded, given trace headers and, where due, a refusal notice as ``congvu serve`` would. A
failure is: the transaction raising, a Decision with ``errors`` (a rule or the evidence
gathering crashed), a reply that is not one well-formed SMTP reply line, or a verdict whose
reply has the wrong class; also any exception while building the record, trace headers or
notice, and a record that the record's reader does not read back to the text stored.

Dialogues are random command sequences (EHLO/HELO/MAIL/RCPT/DATA/RSET/NOOP/STARTTLS/XFORWARD
and garbage; bad arguments, pipelined bursts, bare CR/LF, NULs, long lines, early hang-ups,
failed TLS handshakes) against two real gateways on 127.0.0.1 (one plain and untrusted; one
with STARTTLS, XFORWARD from loopback and a trusted network) relaying to a real aiosmtpd
downstream that refuses or drops on request. A failure is: a reply line that is not a
well-formed SMTP reply (3 digits, printable ASCII, CRLF) or shows internals ("Traceback",
"Error: ("); a 250 to end-of-data for a message the downstream did not receive; a message the
downstream received that the gateway did not record as accepted (or received twice, or
without our trace headers: smuggled); an "smtp.exception" (or "check.exception") log event; an
exception in the event loop; a broken decision chain.

Generation is deterministic given --seed: message N is the same bytes in every run.

Where things are. Messages: ``corpus`` (the seed data) and ``draw`` (random draws) feed
``headers``, ``parts`` (text parts and attachments, with ``pdfs``, the updates and forgeries of
signed PDFs, and ``containers``, the archives) and ``mime`` (the structure above them), which
``messages`` puts together (``count_draws`` there counts the named hostile structures drawn:
``_drew`` in ``draw``); ``runner`` checks one message (``CheckRunner``) and
``message_run`` many. Dialogues: ``dialogues`` generates them, ``harness`` holds the gateways
and the downstream, ``client`` plays one, ``dialogue_run`` many. Shared: ``config`` (what the
gateways are given), ``replies`` (the reply check), ``report`` (what a run found). ``cli`` is
the command. Names with a leading underscore belong to the package: its modules share them,
nothing outside it uses them.
"""
