package billing

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestPinnedPrice(t *testing.T) {
	cases := map[string]struct {
		annotations map[string]string
		want        Price
		wantOK      bool
	}{
		"pinned by PinPrice": {
			annotations: PinPrice(Price{Value: 10, Interval: 90 * time.Minute, Policy: "gpu"}),
			want:        Price{Value: 10, Interval: 90 * time.Minute, Policy: "gpu"}, wantOK: true,
		},
		"free": {
			annotations: PinPrice(Price{Value: 0, Interval: time.Minute}),
			want:        Price{Interval: time.Minute}, wantOK: true,
		},
		"nothing pinned": {annotations: map[string]string{hcv1.AnnotationUsername: "alice"}},
		"a negative value": {annotations: map[string]string{
			hcv1.AnnotationBillingValue: "-1", hcv1.AnnotationBillingInterval: "10m"}},
		"an interval under a second": {annotations: map[string]string{
			hcv1.AnnotationBillingValue: "1", hcv1.AnnotationBillingInterval: "500ms"}},
		"no interval": {annotations: map[string]string{hcv1.AnnotationBillingValue: "1"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok := PinnedPrice(tc.annotations)
			if ok != tc.wantOK {
				t.Fatalf("PinnedPrice ok = %v, want %v", ok, tc.wantOK)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("PinnedPrice (-want +got):\n%s", d)
			}
		})
	}
}
