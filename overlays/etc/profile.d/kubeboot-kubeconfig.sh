# kubeboot: root's kubectl uses the cluster's admin kubeconfig on a control
# plane, as the reference procedure said after kubeadm init
# (export KUBECONFIG=/etc/kubernetes/admin.conf). Only root can read it;
# configured users get their own copy in ~/.kube/config from bootstrapd.
if [ "$(id -u)" -eq 0 ] && [ -z "${KUBECONFIG:-}" ] && [ -r /etc/kubernetes/admin.conf ]; then
	export KUBECONFIG=/etc/kubernetes/admin.conf
fi
