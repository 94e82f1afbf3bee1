// Package kubespawner builds pods shaped exactly like the ones KubeSpawner 7
// creates under Zero to JupyterHub 4 (labels, the raw-username annotation,
// the Hub token inline in env), for the tests, the benchmarks and the demo.
package kubespawner

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Pod is user's server pod (server "" is the default server) in namespace
// ns, carrying token as its JUPYTERHUB_API_TOKEN.
func Pod(ns, user, server, token string) *corev1.Pod {
	name := "jupyter-" + user
	if server != "" {
		name += "--" + server
	}
	ann := map[string]string{
		hcv1.AnnotationUsername:               user,
		"hub.jupyter.org/kubespawner-version": "7.1.0",
		"hub.jupyter.org/jupyterhub-version":  "5.5.0",
	}
	if server != "" {
		ann[hcv1.AnnotationServerName] = server
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{
				"app": "jupyterhub", "app.kubernetes.io/name": "jupyterhub",
				"release": "jhub", "app.kubernetes.io/instance": "jhub",
				"chart": "jupyterhub-4.2.0", "helm.sh/chart": "jupyterhub-4.2.0",
				"app.kubernetes.io/managed-by": "kubespawner",
				"component":                    "singleuser-server", "app.kubernetes.io/component": "singleuser-server",
				"hub.jupyter.org/username": user, "hub.jupyter.org/servername": server,
				"hub.jupyter.org/network-access-hub": "true",
			},
			Annotations: ann,
		},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			RestartPolicy:                corev1.RestartPolicyOnFailure,
			Containers: []corev1.Container{{
				Name:  "notebook",
				Image: "quay.io/jupyter/base-notebook:latest",
				Args:  []string{"jupyterhub-singleuser"},
				Env: []corev1.EnvVar{
					{Name: "JUPYTERHUB_API_TOKEN", Value: token},
					{Name: "JPY_API_TOKEN", Value: token},
					{Name: "JUPYTERHUB_USER", Value: user},
					{Name: "JUPYTERHUB_API_URL", Value: "http://hub:8081/hub/api"},
					{Name: "JUPYTERHUB_SERVICE_PREFIX", Value: "/user/" + user + "/"},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
				},
			}},
		},
	}
}
