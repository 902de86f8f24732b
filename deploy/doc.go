// Package deploy holds no code: its tests check the deployment files beside
// it (Dockerfile, systemd unit, sysctls, Kubernetes manifests) for the
// invariants an operator relies on, so a change that breaks one fails CI.
//
// It is a nested module (github.com/swarmgate/swarmgate/deploy) so that the
// Kubernetes API types it decodes into stay out of the main go.mod.
//
//	(cd deploy && go vet ./... && go test ./...)
//
// What each test checks is in its doc comment; the container build runs
// only where a builder is available (TestImage).
package deploy
