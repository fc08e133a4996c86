# The section-15 server of ../../../shared/seed/socket-tcp-sticky-packets.txt ("高大上版 解决粘包方式(自定制包头)"),
# copied verbatim except the address: 127.0.0.1 and the port from argv[1] instead of 192.168.14.97:8848.
# Used by tests/test_course_scripts.py. It serves one client at a time and runs whatever it is sent.
import socket
import subprocess
import json
import struct
phone=socket.socket(socket.AF_INET,socket.SOCK_STREAM)

phone.bind(('127.0.0.1',int(__import__('sys').argv[1])))

#开机监听
while 1:
    phone.listen(2)
    print('开启通信')

    conn,addr=phone.accept()#阻塞
    # s = input('请输入')
    # conn.send(s.encode('utf-8'))
    print(conn,addr)

#from_client_data.upper()b

    while 1:
        try:
            from_client_data = conn.recv(1024)  # 至多接受1024个字节 阻塞
            if from_client_data.upper()==b'Q':
                print('客户正常退出了')
                break
            else:
                # print(f'来自可无端的消息:{from_client_data.decode("utf-8")}')
                # from_server_data=input('》》').strip().encode('utf-8')
                #
                obj = subprocess.Popen(from_client_data.decode('utf-8'),
                                       shell=True,
                                       stdout=subprocess.PIPE,#正确命令
                                       stderr=subprocess.PIPE,# 错误命令

                                       )

                # s= # 正确命令
                # s2=obj.stderr.read().decode('gbk')  # 错误命令
                total_base=obj.stdout.read()+obj.stderr.read()#原本就是gbk格式的
                total_size=len(total_base)
                #1.制作自定义报头
                head_dic={'file_name':'text1',
                'md5':54645898788,
                'total_size':total_size}
                #2.json形式的报头
                head_dic_json=json.dumps(head_dic)
                #3.bytes形式包头(把json形式字符串改成字节)
                head_dic_json_bytes = json.dumps(head_dic).encode('utf-8')
                #4获取bytes的总字节数(int类型)
                len_head_dic_json_bytes=len(head_dic_json_bytes)
                #5将不固定的int总字节变成固定长度的4个字节
                four_head_bytes=struct.pack('i',len_head_dic_json_bytes)
                #6 发送固定的4个字节
                conn.send(four_head_bytes)
                #7发送包头数据
                conn.send( head_dic_json_bytes)
                #8发送总数据
                conn.send(total_base)
        except ConnectionResetError:
            print('客户端强行断开了')
            break
    conn.close()
phone.close()
