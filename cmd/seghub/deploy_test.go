package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/seghub/seghub/pkg/config"
)

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Selector map[string]any `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Spec struct {
				Containers []struct {
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name string `yaml:"name"`
					} `yaml:"env"`
					ReadinessProbe struct {
						GRPC struct {
							Port int `yaml:"port"`
						} `yaml:"grpc"`
					} `yaml:"readinessProbe"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestDeploymentManifests checks that the Kubernetes manifests and the
// Dockerfile name only services, ports and settings that exist.
func TestDeploymentManifests(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", "seghub.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	deployments := map[string]k8sObject{}
	services := map[string]k8sObject{}
	var cm k8sObject
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "Deployment":
			deployments[o.Metadata.Name] = o
		case "Service":
			services[o.Metadata.Name] = o
		case "ConfigMap":
			cm = o
		}
	}
	known := config.EnvNames()
	for k := range cm.Data {
		if !slices.Contains(known, k) {
			t.Errorf("ConfigMap sets %s, which seghub does not read", k)
		}
	}
	for _, role := range roles {
		if role == "all" {
			continue
		}
		d, ok := deployments["seghub-"+role]
		if !ok {
			t.Errorf("no Deployment for %s", role)
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		if !slices.Equal(c.Args, []string{"serve", role}) {
			t.Errorf("%s runs %v", role, c.Args)
		}
		for _, e := range c.Env {
			if !slices.Contains(known, e.Name) {
				t.Errorf("%s sets %s, which seghub does not read", role, e.Name)
			}
		}
		ports := map[string]int{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["grpc"] != 9090 || (role == "gateway") != (ports["http"] == 8080) {
			t.Errorf("%s ports %v do not match SEGHUB_GRPC_ADDR/SEGHUB_HTTP_ADDR", role, ports)
		}
		if c.ReadinessProbe.GRPC.Port != 9090 {
			t.Errorf("%s has no gRPC readiness probe on 9090", role)
		}
		s, ok := services["seghub-"+role]
		if !ok {
			t.Errorf("no Service for %s", role)
			continue
		}
		for _, p := range s.Spec.Ports {
			if ports[p.TargetPort] == 0 {
				t.Errorf("Service %s targets unknown port %q", role, p.TargetPort)
			}
		}
	}
	for k, v := range cm.Data {
		if strings.HasSuffix(k, "_ADDR") && strings.HasPrefix(v, "seghub-") {
			host, _, _ := strings.Cut(v, ":")
			if _, ok := services[host]; !ok {
				t.Errorf("%s points at %s, which no Service defines", k, host)
			}
		}
	}

	df, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`go build [^&\n]*?(\./\S+)`).FindAllSubmatch(df, -1) {
		dir := filepath.Join("..", "..", string(m[1]))
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Errorf("Dockerfile builds %s, which does not exist", m[1])
		}
	}
	if !bytes.Contains(df, []byte("EXPOSE 8080 9090")) {
		t.Error("Dockerfile does not expose the REST and gRPC ports")
	}
}
