// Package proxy owns the server's nginx sites for the apps Berth deploys,
// and the private keys, CSRs and certificates those sites serve.
//
// # Who runs ACME (issue 19 §2)
//
// The controller runs the ACME client (the github.com/go-acme/lego/v5
// library packages) with a CSR that this package makes; the site's private
// key is generated here, on the server, and never leaves it. The agent
// answers HTTP-01 by writing the key authorisation into a challenge
// directory that nginx serves at /.well-known/acme-challenge/ over plain
// HTTP, before any redirect. Why:
//
//   - lego and its DNS providers stay out of the agent binary, which runs
//     on every managed server and must stay small (this package uses the
//     standard library's crypto only);
//   - the controller drives renewal (ACME Renewal Information, backoff,
//     notifications) from PostgreSQL, where the state already is, and a
//     server that is offline cannot forget a renewal it never owned;
//   - DNS-01 for wildcards needs DNS provider credentials, which then stay
//     on the controller and never go to servers.
//
// # Files
//
//	SitesDir/_berth.conf        http-level pieces every site uses (the
//	                            $http_upgrade map) and a loopback status
//	                            server (127.0.0.1:HTTPPort, Host
//	                            status.berth-agent.invalid) whose answer
//	                            is the generation of the last reload and
//	                            the answering worker's pid
//	SitesDir/APP.conf           one file per app, a server block per host
//	SitesDir/.APP.conf.prev     the previous file while a new one is tested
//	SitesDir/.APP.conf.absent   marker: no previous file while testing
//	StateDir/                   0711: nginx's workers must pass through it
//	                            to the challenges; nothing in it is listable
//	StateDir/keys/NAME.key      ECDSA P-256 key, 0600 in a 0700 directory
//	StateDir/keys/NAME.next.key a rotated key waiting for its certificate
//	StateDir/certs/NAME.pem     the certificate chain for NAME.key
//	StateDir/sites/APP.json     the Site last applied, so a new certificate
//	                            can re-render the sites that use it
//	ChallengeDir/TOKEN          HTTP-01 key authorisations, 0644 (default
//	                            StateDir/challenges, 0755)
//
// nginx's master process reads keys and certificates as root when it loads
// its configuration; its workers (www-data) only read the challenge files
// and static roots. The systemd unit keeps /var/lib/berth-agent at 0700, so
// in production the agent sets ChallengeDir outside it.
//
// # Applying a site
//
// Apply validates everything it renders (host names, upstreams, paths,
// redirect targets) against strict character sets, so no domain, path or
// URL can carry an nginx directive, quote or variable into the file. It
// renders the site, writes it to a temporary file (fsync), keeps the live
// file as .APP.conf.prev (a hard link, so the live name is never missing),
// renames the new file into place and runs `nginx -t`. A failed check (or a
// warning that a host is already served by another server block) puts the
// previous file back and returns nginx's own message. A passed check is
// followed by `nginx -s reload` and a wait until the new configuration is
// the only one answering: the loopback status server is asked, on fresh
// connections, for the generation written with this change until it
// matches, and then every worker that ran before the reload must have
// exited or closed its listening sockets (read from /proc: an old worker
// can otherwise still accept a connection and answer it with the old
// configuration). All of it is polling a condition, never a fixed sleep.
// A reload that nginx refused (a port already taken, say) is reported at
// once from the error log's new [emerg] lines when Config.ErrorLog is
// set, else when Config.ReloadTimeout runs out.
//
// An agent that dies between the rename and the check leaves .prev or
// .absent behind; New puts the previous state back before anything else.
//
// # Rendering
//
// Per host (hosts handled alike share one block with several
// server_name entries), a plain HTTP server block that always answers
// /.well-known/acme-challenge/ from ChallengeDir first; then either a
// redirect (redirect-only hosts, with their status, path and query kept),
// a redirect to HTTPS (force HTTPS, but only when a certificate is really
// there: otherwise the site stays on plain HTTP so the first issuance can
// happen), or the app (reverse proxy to its upstream with Host,
// X-Real-IP, X-Forwarded-For/-Proto/-Host and WebSocket upgrades, or its
// static root). With a certificate, a TLS server block serves the same on
// HTTPS with HTTP/2, TLS 1.2 and 1.3 and Mozilla's "intermediate" ciphers
// (the ECDHE suites), and HSTS only when the domain asks for it.
package proxy
