// k8s-encode turns JSON Kubernetes objects into exactly the bytes kube-apiserver
// writes to etcd, optionally encrypted at rest the way the apiserver does it. It is a
// test tool for etcd-lifeboat: the Rust tests must never produce these bytes with
// their own encoder, so this program is built from Kubernetes' own Go sources (the
// Debian sid packages golang-k8s-{api,apimachinery,apiserver}-dev) by
// scripts/install-test-deps.sh (step k8s-encoder) into .tools/bin/k8s-encode.
//
// Usage:
//
//	k8s-encode [--encryption-config FILE] < objects.jsonl > values.jsonl
//	k8s-encode --version
//
// Each input line is one object:
//
//	{"key":"/registry/secrets/team-a/db","object":{"apiVersion":"v1","kind":"Secret",...},
//	 "format":"protobuf"|"json", "resource":"secrets"}
//
// "format" is optional: protobuf when the object's apiVersion/kind is a built-in type
// (registered from every group of k8s.io/api), else json (custom resources, CRDs,
// APIServices: kube-apiserver stores those as JSON). "resource" is optional and only
// matters with --encryption-config: the group resource the encryption configuration is
// matched against ("secrets", "deployments.apps", "widgets.example.com"); by default
// the second segment of the key (/registry/<resource>/...), qualified with the object's
// API group when it has one (/registry/<group>/<resource>/... for custom resources).
// Give it explicitly where the key's prefix is not the resource's name (endpoints are
// stored under /registry/services/endpoints, nodes under /registry/minions).
//
// Each output line is {"key":"...","value":"<base64 of the exact bytes>"}, in input
// order. On any error the message names the input line and the exit code is 1.
//
// What the bytes are, as in the apiserver:
//   - protobuf: apimachinery's protobuf serializer behind a versioning encoder (as
//     k8s.io/apiserver/pkg/server/storage/storage_codec.go NewStorageCodec builds it):
//     "k8s\x00" + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
//   - json: apimachinery's JSON serializer on an unstructured.Unstructured: compact
//     JSON, keys sorted, followed by "\n".
//   - encryption: the transformers of k8s.io/apiserver's own loader
//     (encryptionconfig.LoadEncryptionConfig) picked per resource the way the apiserver
//     does (StaticTransformers.TransformerForResource), with the full etcd key as the
//     authenticated data, as k8s.io/apiserver/pkg/storage/etcd3/store.go passes it
//     (authenticatedDataString(preparedKey) in Create and GuaranteedUpdate).
//
// The object is encoded as given: the apiserver's defaulting (which lives in
// k8s.io/kubernetes, not in these libraries) is not applied, so give the fields a real
// apiserver would have filled in if the test needs them. Fields the typed object does
// not have are an error rather than silently dropped.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	admissionregistrationv1alpha1 "k8s.io/api/admissionregistration/v1alpha1"
	admissionregistrationv1beta1 "k8s.io/api/admissionregistration/v1beta1"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	apidiscoveryv2beta1 "k8s.io/api/apidiscovery/v2beta1"
	apiserverinternalv1alpha1 "k8s.io/api/apiserverinternal/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	appsv1beta1 "k8s.io/api/apps/v1beta1"
	appsv1beta2 "k8s.io/api/apps/v1beta2"
	authenticationv1 "k8s.io/api/authentication/v1"
	authenticationv1alpha1 "k8s.io/api/authentication/v1alpha1"
	authenticationv1beta1 "k8s.io/api/authentication/v1beta1"
	authorizationv1 "k8s.io/api/authorization/v1"
	authorizationv1beta1 "k8s.io/api/authorization/v1beta1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	batchv1beta1 "k8s.io/api/batch/v1beta1"
	certificatesv1 "k8s.io/api/certificates/v1"
	certificatesv1alpha1 "k8s.io/api/certificates/v1alpha1"
	certificatesv1beta1 "k8s.io/api/certificates/v1beta1"
	coordinationv1 "k8s.io/api/coordination/v1"
	coordinationv1alpha2 "k8s.io/api/coordination/v1alpha2"
	coordinationv1beta1 "k8s.io/api/coordination/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	discoveryv1beta1 "k8s.io/api/discovery/v1beta1"
	eventsv1 "k8s.io/api/events/v1"
	eventsv1beta1 "k8s.io/api/events/v1beta1"
	extensionsv1beta1 "k8s.io/api/extensions/v1beta1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	flowcontrolv1beta1 "k8s.io/api/flowcontrol/v1beta1"
	flowcontrolv1beta2 "k8s.io/api/flowcontrol/v1beta2"
	flowcontrolv1beta3 "k8s.io/api/flowcontrol/v1beta3"
	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	networkingv1 "k8s.io/api/networking/v1"
	networkingv1beta1 "k8s.io/api/networking/v1beta1"
	nodev1 "k8s.io/api/node/v1"
	nodev1alpha1 "k8s.io/api/node/v1alpha1"
	nodev1beta1 "k8s.io/api/node/v1beta1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	rbacv1 "k8s.io/api/rbac/v1"
	rbacv1alpha1 "k8s.io/api/rbac/v1alpha1"
	rbacv1beta1 "k8s.io/api/rbac/v1beta1"
	resourcev1 "k8s.io/api/resource/v1"
	resourcev1alpha3 "k8s.io/api/resource/v1alpha3"
	resourcev1beta1 "k8s.io/api/resource/v1beta1"
	resourcev1beta2 "k8s.io/api/resource/v1beta2"
	schedulingv1 "k8s.io/api/scheduling/v1"
	schedulingv1alpha2 "k8s.io/api/scheduling/v1alpha2"
	schedulingv1beta1 "k8s.io/api/scheduling/v1beta1"
	storagev1 "k8s.io/api/storage/v1"
	storagev1alpha1 "k8s.io/api/storage/v1alpha1"
	storagev1beta1 "k8s.io/api/storage/v1beta1"
	storagemigrationv1beta1 "k8s.io/api/storagemigration/v1beta1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured/unstructuredscheme"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

// Set by scripts/install-test-deps.sh (-ldflags -X): the Debian packages built from.
var (
	apimachineryVersion = "unknown"
	apiVersion          = "unknown"
	apiserverVersion    = "unknown"
)

// Every group version of k8s.io/api (the list of k8s.io/api/*/*/register.go). Not
// client-go's scheme: that package need not be there, and it leaves some groups out.
var addToScheme = runtime.SchemeBuilder{
	admissionv1.AddToScheme,
	admissionv1beta1.AddToScheme,
	admissionregistrationv1.AddToScheme,
	admissionregistrationv1alpha1.AddToScheme,
	admissionregistrationv1beta1.AddToScheme,
	apidiscoveryv2.AddToScheme,
	apidiscoveryv2beta1.AddToScheme,
	apiserverinternalv1alpha1.AddToScheme,
	appsv1.AddToScheme,
	appsv1beta1.AddToScheme,
	appsv1beta2.AddToScheme,
	authenticationv1.AddToScheme,
	authenticationv1alpha1.AddToScheme,
	authenticationv1beta1.AddToScheme,
	authorizationv1.AddToScheme,
	authorizationv1beta1.AddToScheme,
	autoscalingv1.AddToScheme,
	autoscalingv2.AddToScheme,
	batchv1.AddToScheme,
	batchv1beta1.AddToScheme,
	certificatesv1.AddToScheme,
	certificatesv1alpha1.AddToScheme,
	certificatesv1beta1.AddToScheme,
	coordinationv1.AddToScheme,
	coordinationv1alpha2.AddToScheme,
	coordinationv1beta1.AddToScheme,
	corev1.AddToScheme,
	discoveryv1.AddToScheme,
	discoveryv1beta1.AddToScheme,
	eventsv1.AddToScheme,
	eventsv1beta1.AddToScheme,
	extensionsv1beta1.AddToScheme,
	flowcontrolv1.AddToScheme,
	flowcontrolv1beta1.AddToScheme,
	flowcontrolv1beta2.AddToScheme,
	flowcontrolv1beta3.AddToScheme,
	imagepolicyv1alpha1.AddToScheme,
	networkingv1.AddToScheme,
	networkingv1beta1.AddToScheme,
	nodev1.AddToScheme,
	nodev1alpha1.AddToScheme,
	nodev1beta1.AddToScheme,
	policyv1.AddToScheme,
	policyv1beta1.AddToScheme,
	rbacv1.AddToScheme,
	rbacv1alpha1.AddToScheme,
	rbacv1beta1.AddToScheme,
	resourcev1.AddToScheme,
	resourcev1alpha3.AddToScheme,
	resourcev1beta1.AddToScheme,
	resourcev1beta2.AddToScheme,
	schedulingv1.AddToScheme,
	schedulingv1alpha2.AddToScheme,
	schedulingv1beta1.AddToScheme,
	storagev1.AddToScheme,
	storagev1alpha1.AddToScheme,
	storagev1beta1.AddToScheme,
	storagemigrationv1beta1.AddToScheme,
}

// One input line.
type input struct {
	Key      string          `json:"key"`
	Object   json.RawMessage `json:"object"`
	Format   string          `json:"format,omitempty"`
	Resource string          `json:"resource,omitempty"`
}

// One output line.
type output struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type encoder struct {
	scheme       *runtime.Scheme
	codecs       serializer.CodecFactory
	strictJSON   *jsonserializer.Serializer // JSON -> typed object, unknown fields refused
	proto        *protobuf.Serializer
	plainJSON    *jsonserializer.Serializer // unstructured -> compact JSON + "\n"
	transformers encryptionconfig.StaticTransformers
}

func newEncoder() (*encoder, error) {
	scheme := runtime.NewScheme()
	if err := addToScheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering the k8s.io/api groups: %w", err)
	}
	return &encoder{
		scheme: scheme,
		codecs: serializer.NewCodecFactory(scheme),
		strictJSON: jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory, scheme, scheme,
			jsonserializer.SerializerOptions{Strict: true}),
		proto: protobuf.NewSerializer(scheme, scheme),
		plainJSON: jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory,
			unstructuredscheme.NewUnstructuredCreator(), unstructuredscheme.NewUnstructuredObjectTyper(),
			jsonserializer.SerializerOptions{}),
	}, nil
}

// encode returns the bytes kube-apiserver would store for one input line.
func (e *encoder) encode(in *input) ([]byte, error) {
	if in.Key == "" {
		return nil, errors.New(`"key" is missing or empty`)
	}
	if len(in.Object) == 0 || string(in.Object) == "null" {
		return nil, errors.New(`"object" is missing`)
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(in.Object, &tm); err != nil {
		return nil, fmt.Errorf(`"object" is not a JSON object with apiVersion and kind: %w`, err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, fmt.Errorf(`"object" needs both apiVersion and kind (got apiVersion %q, kind %q)`, tm.APIVersion, tm.Kind)
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	builtin := e.scheme.Recognizes(gvk)

	format := in.Format
	if format == "" {
		if builtin {
			format = "protobuf"
		} else {
			format = "json"
		}
	}
	var data []byte
	var err error
	switch format {
	case "protobuf":
		if !builtin {
			return nil, fmt.Errorf("%s is not a built-in Kubernetes type (not in any group of k8s.io/api %s), so it has no protobuf encoding; "+
				"kube-apiserver stores custom resources, CRDs and APIServices as JSON: use \"format\":\"json\" or leave format out",
				describe(gvk), apiVersion)
		}
		data, err = e.encodeProtobuf(in.Object, gvk)
	case "json":
		data, err = e.encodeJSON(in.Object)
	default:
		return nil, fmt.Errorf(`"format" must be "protobuf" or "json", not %q`, format)
	}
	if err != nil {
		return nil, err
	}
	if e.transformers == nil {
		return data, nil
	}
	resource := in.Resource
	if resource == "" {
		resource, err = resourceFromKey(in.Key, gvk.Group)
		if err != nil {
			return nil, err
		}
	}
	gr := schema.ParseGroupResource(resource)
	out, err := e.transformers.TransformerForResource(gr).
		TransformToStorage(context.Background(), data, value.DefaultContext(in.Key))
	if err != nil {
		return nil, fmt.Errorf("encrypting for resource %q: %w", gr.String(), err)
	}
	return out, nil
}

func (e *encoder) encodeProtobuf(raw []byte, gvk schema.GroupVersionKind) ([]byte, error) {
	obj, _, err := e.strictJSON.Decode(raw, &gvk, nil)
	if err != nil {
		if runtime.IsStrictDecodingError(err) {
			return nil, fmt.Errorf("%s: %w (the apiserver would drop such fields; remove them from the object)", describe(gvk), err)
		}
		return nil, fmt.Errorf("decoding the object as %s: %w", describe(gvk), err)
	}
	// The storage codec: protobuf behind a versioning encoder for the object's version,
	// which sets apiVersion and kind for the runtime.Unknown envelope.
	codec := e.codecs.EncoderForVersion(e.proto, gvk.GroupVersion())
	data, err := runtime.Encode(codec, obj)
	if err != nil {
		return nil, fmt.Errorf("protobuf-encoding %s: %w", describe(gvk), err)
	}
	return data, nil
}

func (e *encoder) encodeJSON(raw []byte) ([]byte, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("decoding the object: %w", err)
	}
	var buf bytes.Buffer
	if err := e.plainJSON.Encode(u, &buf); err != nil {
		return nil, fmt.Errorf("JSON-encoding the object: %w", err)
	}
	return buf.Bytes(), nil
}

// resourceFromKey: /registry/<resource>/... for built-in types (qualified with the
// object's group, e.g. deployments.apps), /registry/<group>/<resource>/... for custom
// resources (widgets.example.com).
func resourceFromKey(key, group string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(key, "/"), "/")
	if len(parts) < 3 || parts[1] == "" {
		return "", fmt.Errorf(`cannot tell the resource from key %q (expected /registry/<resource>/...); give "resource"`, key)
	}
	if group == "" {
		return parts[1], nil
	}
	if parts[1] == group && len(parts) >= 4 && parts[2] != "" {
		return parts[2] + "." + group, nil
	}
	return parts[1] + "." + group, nil
}

func describe(gvk schema.GroupVersionKind) string {
	return fmt.Sprintf("apiVersion %q kind %q", gvk.GroupVersion().String(), gvk.Kind)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var configPath string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--version":
			fmt.Fprintf(stdout, "k8s-encode\ngo %s\nk8s.io/apimachinery %s\nk8s.io/api %s\nk8s.io/apiserver %s\n",
				goruntime.Version(), apimachineryVersion, apiVersion, apiserverVersion)
			return 0
		case a == "--encryption-config" && i+1 < len(args):
			configPath = args[i+1]
			i++
		case strings.HasPrefix(a, "--encryption-config="):
			configPath = strings.TrimPrefix(a, "--encryption-config=")
		default:
			fmt.Fprintf(stderr, "k8s-encode: unknown argument %q\nusage: k8s-encode [--encryption-config FILE] < objects.jsonl   |   k8s-encode --version\n", a)
			return 2
		}
	}
	enc, err := newEncoder()
	if err != nil {
		fmt.Fprintf(stderr, "k8s-encode: %v\n", err)
		return 1
	}
	if configPath != "" {
		// The apiserver's own loader and validation (aescbc, aesgcm, secretbox, identity;
		// kms would try to reach its plugin). Its goroutines end with the process.
		cfg, err := encryptionconfig.LoadEncryptionConfig(context.Background(), configPath, false, "k8s-encode")
		if err != nil {
			fmt.Fprintf(stderr, "k8s-encode: --encryption-config %s: %v\n", configPath, err)
			return 1
		}
		enc.transformers = encryptionconfig.StaticTransformers(cfg.Transformers)
	}

	r := bufio.NewReader(stdin)
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	for n := 1; ; n++ {
		line, readErr := r.ReadBytes('\n')
		if readErr != nil && readErr != io.EOF {
			fmt.Fprintf(stderr, "k8s-encode: reading line %d of stdin: %v\n", n, readErr)
			return 1
		}
		if len(bytes.TrimSpace(line)) > 0 {
			if err := encodeLine(enc, line, w); err != nil {
				w.Flush()
				fmt.Fprintf(stderr, "k8s-encode: line %d: %v\n", n, err)
				return 1
			}
		}
		if readErr == io.EOF {
			break
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "k8s-encode: writing stdout: %v\n", err)
		return 1
	}
	return 0
}

func encodeLine(enc *encoder, line []byte, w io.Writer) error {
	var in input
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf(`not a JSON object {"key","object","format"?,"resource"?}: %w`, err)
	}
	data, err := enc.encode(&in)
	if err != nil {
		return fmt.Errorf("key %q: %w", in.Key, err)
	}
	out, err := json.Marshal(output{Key: in.Key, Value: base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		return err
	}
	out = append(out, '\n')
	_, err = w.Write(out)
	return err
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
