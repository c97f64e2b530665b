// Package ca is the controller's internal certificate authority: the root
// that agents and the controller use to authenticate each other over
// mutual TLS.
//
// # Files
//
// The CA lives in the controller's data directory:
//
//	ca.key  PKCS#8 PEM, ECDSA P-256, mode 0600. The CA's private key.
//	ca.crt  PEM, mode 0644. The self-signed root certificate, public part only.
//
// LoadOrCreate creates both on first start. Each file is written to a
// temporary file, fsynced, and hard-linked into place: a link fails when the
// name exists, so two controllers starting at once on one data directory
// cannot end up with two CAs. Whoever links ca.key first wins, and every
// process then uses what is on disk, never what it generated. A ca.key that
// group or others can access is refused.
//
// # Two certificate kinds, disjoint usages
//
// The CA issues exactly two kinds of leaf certificates:
//
//   - The controller's serving certificate: ExtKeyUsage ServerAuth only, DNS
//     names ServerName ("controller.berth.internal") plus the configured
//     hostnames, loopback IP addresses. The served chain carries the CA
//     certificate after the leaf, so an agent with only the pin can find and
//     check the CA during enrollment.
//   - An agent's client certificate: ExtKeyUsage ClientAuth only, Subject
//     CommonName = the server's ULID and exactly one URI SAN
//     berth://server/<ULID>; no DNS names, no IP addresses.
//
// The usages never overlap. An agent holds a valid certificate from the same
// CA the controller uses, so without this separation a compromised agent
// could present its own certificate as a controller to other agents (or to
// the CLI). With ClientAuth-only agent certificates, every TLS client that
// verifies the server (Go checks ExtKeyUsage ServerAuth by default) refuses
// an agent certificate, and the controller's certificate, lacking ClientAuth,
// is refused by the controller's own client verification.
//
// # Why a fixed server name
//
// Agents reach the controller under whatever address the operator uses (an
// IP, a load balancer, a name that changes later). Instead of verifying that
// address, clients verify the fixed name ServerName, which only the
// controller's serving certificate carries. Agent certificates carry no DNS
// names at all, so the name check is a second, independent barrier next to
// the key usage. The configured hostnames are only there for tools that
// verify the dialed name themselves.
//
// # Why pin the public key
//
// A join token is a secret, so the agent must know it is talking to the
// right controller before sending it. The operator copies the pin,
// "sha256:" + hex(SHA-256(SubjectPublicKeyInfo DER of the CA certificate)),
// along with the token. Pinning the key rather than the certificate keeps the
// pin stable if the CA certificate is ever re-signed with the same key, and
// the SPKI is what actually signs every certificate. It is the same form
// Kubernetes (kubeadm's --discovery-token-ca-cert-hash) and HPKP use.
//
// # Agent certificates
//
// SignAgentCSR uses the certificate request only as proof of possession of
// the agent's key: the signature must verify, and the key must be ECDSA
// P-256 or Ed25519. Everything the request asks for (subject, SANs,
// extensions) is ignored; the controller decides the name. Serials are 128
// bits from crypto/rand (top bit set so every serial has the same length:
// 127 random bits), lowercase hex of the serial (SerialHex) is the key under
// which issued certificates are recorded and revoked. NotBefore is one minute
// in the past to absorb clock skew; the default lifetime is 7 days, at most
// 90.
//
// # Checks on every connection
//
// ServerTLSConfig asks for a client certificate but does not require one:
// enrollment and the bearer-token admin API connect without. When a
// certificate is presented, Go's TLS stack already verifies its chain to the
// CA, its validity period and its ClientAuth usage, and the config's
// VerifyConnection runs VerifyAgentChain on top (the exact usage set and the
// berth://server identity) so a malformed identity fails the handshake. The
// gRPC layer calls VerifyAgentChain again on the peer certificate of every
// agent RPC to get the server id and serial, then checks in the database that
// the server exists and the serial is not revoked: that is what makes removal
// and revocation effective before a certificate expires.
//
// All time comes from Options.Now, so tests can move the clock.
package ca
