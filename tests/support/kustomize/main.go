// Command kustomize is `kustomize build` of sigs.k8s.io/kustomize/api (the version in go.mod; the same
// kustomize API that kubectl v1.36 embeds), with --enable-helm and --helm-command: what ArgoCD runs for a
// kustomization with helmCharts:. Built for tests/deploy/test_chart.py; our own entry point over krusty.
package main

import (
	"flag"
	"fmt"
	"os"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "build" {
		fmt.Fprintln(os.Stderr, "usage: kustomize build [--enable-helm] [--helm-command PATH] DIR")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	enableHelm := fs.Bool("enable-helm", false, "run helm for helmCharts: entries")
	helmCommand := fs.String("helm-command", "helm", "the helm binary")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "kustomize build: exactly one directory, got", fs.Args())
		os.Exit(2)
	}
	opts := krusty.MakeDefaultOptions()
	if *enableHelm {
		opts.PluginConfig = types.EnabledPluginConfig(types.BploUseStaticallyLinked)
		opts.PluginConfig.HelmConfig.Command = *helmCommand
	}
	resources, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	out, err := resources.AsYaml()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
