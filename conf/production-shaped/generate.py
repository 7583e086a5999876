#!/usr/bin/env python3
"""Writes a production-shaped pybal.conf and its server lists.

The output has the shape of what Wikimedia's puppet template
(operations-puppet modules/pybal/templates/pybal.conf.erb, as driven by
profile::pybal on the eqiad secondary balancer lvs1020) writes: the same
keys, in the same order, with the same value syntax (puppet strings such as
"[ '127.0.0.1', '::1' ]" beside Ruby Array#inspect lists such as
'["IdleConnection", "ProxyFetch"]', Ruby booleans, `tunneling` in every
section, `advertised_instrumentation_ips`, the commented-out bgp-as-path,
`dry-run`). No puppet code is copied: the template's rules are written
again below, and the data is an excerpt of hieradata/common/service.yaml and
conftool-data/node/eqiad.yaml (operations-puppet d3590882967).

Without arguments it writes the CI-sized configuration kept next to this
script (10 services, 14 sections, at most 3 servers each; two of them
synthetic, so that every key the template can write appears: a udp service
with the UDP monitor, the per-service `bgp` key, every IdleConnection and
ProxyFetch option). With --catalog and --nodes (the two YAML files from an
operations-puppet checkout; needs PyYAML) it writes the full configuration
of every service lvs1020 balances (116 sections, about 11,000 servers).

Everything that points at production is on loopback, so the result runs on
one machine (tests/production.rs runs it in a private network namespace):

  127.0.0.10          the balancer itself (bgp-local-ips, bgp-nexthop-ipv4,
                      the third instrumentation_ips entry)
  127.0.0.11, .12     the two routers (bgp-peer-address)
  198.51.100.21-.23   advertised_instrumentation_ips (pybal-<class>-eqiad,
                      one per LVS class lvs1020 serves); documentation
                      addresses, not loopback ones: they are announced over
                      BGP, and routers (BIRD too) ignore 127.0.0.0/8 routes.
                      Like puppet (profile::lvs), put them on `lo` to serve
                      them; rsbal binds them even before (IP_FREEBIND)
  127.1.X.Y           real servers, one address per host name
  fd7f::1:X:Y         the IPv6 address of the same host

Service IPs stay the production ones: they only go to IPVS and BGP.
Server lists are legacy one-dict-per-line files (the shape confd writes),
`config = file://pools/<name>` relative to the config; an IPv6 section gets
its own list `<name>.v6` (IP literals differ per family; production shares
one list of host names).

Usage: generate.py [--out DIR] [--catalog service.yaml --nodes eqiad.yaml]
"""

import argparse
import ipaddress
import os
import re
import sys

SITE = 'eqiad'
HOST_CLASS = 'secondary'  # lvs1020 balances every class
CLASS_HOSTS = {
    'high-traffic1': ['lvs1017', 'lvs1020'],
    'high-traffic2': ['lvs1018', 'lvs1020'],
    'low-traffic': ['lvs1019', 'lvs1020'],
}
SELF_V4 = '127.0.0.10'
SELF_V6 = 'fd7f::127:0:0:1'
PEERS = ['127.0.0.11', '127.0.0.12']
ADVERTISED = ['198.51.100.21', '198.51.100.22', '198.51.100.23']

# An excerpt of service::catalog (hieradata/common/service.yaml), eqiad only.
KUBERNETES = ('kubernetes', 'kubesvc')
CATALOG = {
    'apertium': {
        'description': 'Machine Translation service. apertium.discovery.wmnet',
        'ip': {'default': '10.2.2.11'}, 'port': 4737,
        'lvs': {'class': 'low-traffic', 'conftool': KUBERNETES, 'depool_threshold': 0.5,
                'scheduler': 'wrr',
                'monitors': {'IdleConnection': {'max-delay': 300, 'timeout-clean-reconnect': 3}}},
    },
    'apus': {
        'description': 'Ceph-backed async-replicated S3 cluster',
        'ip': {'default': '10.2.2.10'}, 'port': 443,
        'lvs': {'class': 'low-traffic', 'conftool': ('apus', 'apus'), 'depool_threshold': 0.3,
                'monitors': {'IdleConnection': {'max-delay': 300, 'timeout-clean-reconnect': 3},
                             'ProxyFetch': {'url': ['https://apus.discovery.wmnet/']}}},
    },
    'jobrunner': {
        'description': 'JobRunner LVS interface (https). jobrunner.discovery.wmnet',
        'ip': {'default': '10.2.2.26'}, 'port': 443,
        'lvs': {'class': 'low-traffic', 'conftool': ('jobrunner', 'nginx'),
                'depool_threshold': 0.2, 'scheduler': 'wrr',
                'monitors': {'IdleConnection': {'max-delay': 300, 'timeout-clean-reconnect': 3},
                             'ProxyFetch': {'url': ['https://localhost/w/health-check.php?force_php74=1'],
                                            'check_all': True}}},
    },
    'ldap-ro': {
        'description': 'Ldap for cloud and developer accounts',
        'ip': {'default': '208.80.154.252'}, 'port': 389,
        'lvs': {'class': 'high-traffic2', 'conftool': ('ldap-ro', 'ldap-ro'),
                'depool_threshold': 0.5, 'scheduler': 'mh', 'ipip_encapsulation': ['eqiad'],
                'monitors': {'IdleConnection': {'max-delay': 30, 'timeout-clean-reconnect': 3}}},
    },
    'ncredir': {
        'description': 'Non canonical domains redirect service',
        'ip': {'ncredirlb': '208.80.154.232', 'ncredirlb6': '2620:0:861:ed1a::9'}, 'port': 80,
        'lvs': {'class': 'high-traffic1', 'conftool': ('ncredir', 'nginx'),
                'depool_threshold': 0.5, 'scheduler': 'mh', 'ipip_encapsulation': ['eqiad'],
                'monitors': {'ProxyFetch': {'url': ['http://en.wikipedia.com/_status']}}},
    },
    'prometheus-https': {
        'description': 'prometheus monitoring https',
        'ip': {'default': '10.2.2.25'}, 'port': 443,
        'lvs': {'class': 'low-traffic', 'conftool': ('prometheus', 'prometheus'),
                'depool_threshold': 0.5, 'scheduler': 'wrr',
                'monitors': {'IdleConnection': {'max-delay': 300, 'timeout-clean-reconnect': 3},
                             'ProxyFetch': {'http_status': 302,
                                            'url': ['https://prometheus-%{::site}.wikimedia.org/']}}},
    },
    'text-https': {
        'description': 'Main wiki platform LVS service, text.%{::site}.wikimedia.org (nginx)',
        'ip': {'testlb': '208.80.154.225', 'testlb6': '2620:0:861:ed1a::2',
               'textlb': '208.80.154.224', 'textlb6': '2620:0:861:ed1a::1'},
        'port': 443,
        'lvs': {'class': 'high-traffic1', 'conftool': ('cache_text', 'cdn'),
                'depool_threshold': 0.66, 'scheduler': 'mh', 'ipip_encapsulation': ['eqiad'],
                'monitors': {'IdleConnection': {'max-delay': 300, 'timeout-clean-reconnect': 3},
                             'ProxyFetch': {'url': ['https://healthcheck.wikimedia.org/varnish-fe']}}},
    },
    'thumbor': {
        'description': 'Thumbor image scaling',
        'ip': {'default': '10.2.2.24'}, 'port': 8800,
        'lvs': {'class': 'low-traffic', 'conftool': KUBERNETES, 'depool_threshold': 0.5,
                'scheduler': 'wrr',
                'monitors': {'IdleConnection': {'max-delay': 300, 'timeout-clean-reconnect': 3},
                             'ProxyFetch': {'timeout': 10, 'url': ['http://localhost/healthz']}}},
    },
    # Not in the catalogue: keys the template can write that no service uses.
    'synthetic-tcp': {
        'description': 'SYNTHETIC (not in the catalogue): every IdleConnection and ProxyFetch option, bgp true',
        'ip': {'default': '10.2.2.251'}, 'port': 443,
        'lvs': {'class': 'low-traffic', 'conftool': ('synthetic', 'tcp'), 'protocol': 'tcp',
                'depool_threshold': 0.66, 'scheduler': 'wrr', 'bgp': True,
                'ipip_encapsulation': ['eqiad'],
                'monitors': {
                    'IdleConnection': {'keepalive': True, 'keepalive-idle': 10,
                                       'keepalive-interval': 30, 'keepalive-retries': 3,
                                       'max-delay': 300, 'timeout-clean-reconnect': 3},
                    'ProxyFetch': {'url': ['https://localhost/healthz', 'http://localhost/ping'],
                                   'check_all': True, 'max_failures': 1, 'http_status': 200,
                                   'interval': 10, 'timeout': 5}}},
    },
    'synthetic-udp': {
        'description': 'SYNTHETIC (not in the catalogue): a UDP service with bgp false and the UDP monitor',
        'ip': {'default': '10.2.2.250'}, 'port': 53,
        'lvs': {'class': 'low-traffic', 'conftool': ('synthetic', 'udp'), 'protocol': 'udp',
                'depool_threshold': 0.5, 'scheduler': 'sh', 'bgp': False,
                'monitors': {'UDP': {'interval': 10, 'icmp-timeout': 20}}},
    },
}

# The first hosts of each conftool pool (conftool-data/node/eqiad.yaml).
NODES = {
    KUBERNETES: ['kubernetes1005', 'kubernetes1006', 'kubernetes1007'],
    ('apus', 'apus'): ['moss-fe1001', 'moss-fe1002'],
    ('jobrunner', 'nginx'): ['mw1349', 'mw1350', 'mw1351'],
    ('ldap-ro', 'ldap-ro'): ['ldap-replica1003', 'ldap-replica1004'],
    ('ncredir', 'nginx'): ['ncredir1001', 'ncredir1002'],
    ('prometheus', 'prometheus'): ['prometheus1005', 'prometheus1006'],
    ('synthetic', 'tcp'): ['tcp1001', 'tcp1002', 'tcp1003'],
    ('synthetic', 'udp'): ['udp1001', 'udp1002', 'udp1003'],
    ('cache_text', 'cdn'): ['cp1100', 'cp1102', 'cp1104'],
}


def ruby(value):
    """A value as the template prints it: Ruby's to_s, Array#inspect."""
    if value is True or value is False:
        return 'true' if value else 'false'
    if isinstance(value, list):
        return '[' + ', '.join(ruby_inspect(v) for v in value) + ']'
    return str(value)


def ruby_inspect(value):
    if isinstance(value, str):
        return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
    return ruby(value)


def site(value):
    """Hiera's %{::site} interpolation."""
    if isinstance(value, str):
        return re.sub(r'%\{(?:::)?site\}', SITE, value)
    if isinstance(value, list):
        return [site(v) for v in value]
    if isinstance(value, dict):
        return {k: site(v) for k, v in value.items()}
    return value


class Hosts:
    """One loopback address per host name, in order of first use."""

    def __init__(self):
        self.index = {}

    def v4(self, name):
        i = self.index.setdefault(name, len(self.index))
        hi, low = divmod(i, 254)
        return '127.%d.%d.%d' % (1 + hi // 256, hi % 256, low + 1)

    def v6(self, name):
        _, x, y, z = self.v4(name).split('.')
        return 'fd7f::%s:%s:%s' % (x, y, z)


def nexthop_v6():
    """The /64 of the host's IPv6 address | '::' + its IPv4 with ':'."""
    net = int(ipaddress.IPv6Address(SELF_V6)) & (((1 << 64) - 1) << 64)
    low = int(ipaddress.IPv6Address('::' + SELF_V4.replace('.', ':')))
    return str(ipaddress.IPv6Address(net | low))


def global_section():
    return [
        '# PyBal configuration file', '# This file is managed by Puppet!', '',
        '[global]',
        'bgp = yes',
        'bgp-local-asn = 64600',
        'bgp-peer-address = [ %s ]' % ', '.join("'%s'" % p for p in PEERS),
        '#bgp-as-path = 64600 64601',
        'bgp-nexthop-ipv4 = %s' % SELF_V4,
        'bgp-nexthop-ipv6 = %s' % nexthop_v6(),
        'instrumentation = yes',
        "instrumentation_ips = [ '127.0.0.1', '::1', '%s' ]" % SELF_V4,
        'advertised_instrumentation_ips = %s' % ruby(ADVERTISED),
        "bgp-local-ips = [ '%s' ]" % SELF_V4,
        '# Lower values prefered over higher ones',
        'bgp-med = 100',  # a secondary balancer
        '',
        'dry-run = no',  # the template can write it; production never sets it
        '#', '# LVS service definitions', '#', '',
    ]


def service_sections(name, srv, pool):
    lvs = srv['lvs']
    out = []
    for sub, ip in sorted(srv['ip'].items()):
        subname = name if sub == 'default' else sub
        protocol = lvs.get('protocol', 'tcp')
        out += ['# SERVICE %s' % subname, '# Class: %s' % lvs['class'],
                '# Description: %s' % srv['description'],
                '# LVS balancers: %s' % ' '.join(CLASS_HOSTS[lvs['class']])]
        suffix = '' if protocol == 'tcp' else '_' + protocol
        out.append('[%s_%s%s]' % (subname, srv['port'], suffix))
        out += ['protocol = %s' % protocol, 'ip = %s' % ip, 'port = %s' % srv['port'],
                'scheduler = %s' % lvs.get('scheduler', 'wrr'), 'ops = false',
                'tunneling = %s' % ruby(SITE in lvs.get('ipip_encapsulation', [])), '',
                'config = %s' % pool(name, ip), '']
        if 'bgp' in lvs:
            out.append('bgp = %s' % ruby(lvs['bgp']))
        out.append('depool-threshold = %s' % ruby(lvs['depool_threshold']))
        if 'monitors' in lvs:
            out += ['monitors = %s' % ruby(sorted(lvs['monitors'])), '']
            for monitor, options in sorted(lvs['monitors'].items()):
                out.append('# %s monitor configuration' % monitor)
                for option in sorted(options):
                    out.append('%s.%s = %s' % (monitor.lower(), option, ruby(options[option])))
        out.append('')
    out.append('')
    return out


def from_puppet(catalog_path, nodes_path):
    """The full catalogue and pools, from operations-puppet's YAML."""
    import yaml  # only this mode needs PyYAML

    with open(catalog_path) as f:
        catalog = yaml.safe_load(f)['service::catalog']
    with open(nodes_path) as f:
        nodes = yaml.safe_load(f)[SITE]
    services, pools = {}, {}
    for name, srv in catalog.items():
        lvs = srv.get('lvs')
        if not lvs or srv.get('state') == 'service_setup' or SITE not in srv.get('sites', []):
            continue
        conftool = (lvs['conftool']['cluster'], lvs['conftool']['service'])
        services[name] = dict(srv, ip=srv['ip'][SITE], lvs=dict(lvs, conftool=conftool))
        members = nodes.get(conftool[0]) or {}
        pools[conftool] = sorted(h for h, s in members.items() if conftool[1] in s)
    for name in ('synthetic-tcp', 'synthetic-udp'):
        services[name] = CATALOG[name]
        pools[CATALOG[name]['lvs']['conftool']] = NODES[CATALOG[name]['lvs']['conftool']]
    return services, pools


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=here)
    p.add_argument('--catalog', help='hieradata/common/service.yaml: the full configuration')
    p.add_argument('--nodes', help='conftool-data/node/eqiad.yaml (with --catalog)')
    a = p.parse_args()
    if a.catalog:
        services, pools = from_puppet(a.catalog, a.nodes)
    else:
        services, pools = CATALOG, NODES
    services = site(services)
    hosts = Hosts()
    written = {}
    os.makedirs(os.path.join(a.out, 'pools'), exist_ok=True)

    def pool(name, vip):
        conftool = services[name]['lvs']['conftool']
        v6 = ':' in vip
        file = name + ('.v6' if v6 else '')
        if file not in written:
            lines = ['# Written by conf/production-shaped/generate.py (confd in production)',
                     '# This file is generated from the etcd directories:',
                     '#  [/pools/%s/%s/%s/]' % (SITE, conftool[0], conftool[1]), '']
            members = pools.get(conftool) or ['%s%d' % (conftool[1], i) for i in (1001, 1002)]
            for i, host in enumerate(members):
                address = hosts.v6(host) if v6 else hosts.v4(host)
                # A few disabled servers in the full set, as in production.
                enabled = 'False' if i % 23 == 22 else 'True'
                lines.append("{ 'host': '%s', 'weight':10, 'enabled': %s }" % (address, enabled))
            with open(os.path.join(a.out, 'pools', file), 'w') as f:
                f.write('\n'.join(lines) + '\n')
            written[file] = len(members)
        return 'file://pools/%s' % file

    lines = global_section()
    for name in sorted(services):
        lines += service_sections(name, services[name], pool)
    with open(os.path.join(a.out, 'pybal.conf'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    sections = sum(1 for line in lines if line.startswith('[')) - 1
    print('%s: %d sections, %d lists, %d servers' % (
        a.out, sections, len(written), sum(written.values())))


if __name__ == '__main__':
    sys.exit(main())
